import COpenSSL

public enum OpenSSLRuntime {
    /// Keeps OpenSSL's state alive until the process ends instead of freeing it in an atexit
    /// handler. A command that exits on an error while a worker thread is still hashing (a
    /// digest overlapping disk I/O) would otherwise race that cleanup and crash on a freed lock.
    /// Call first thing in `main`.
    public static func keepStateUntilExit() {
        _ = OPENSSL_init_crypto(UInt64(OPENSSL_INIT_NO_ATEXIT), nil)
    }
}
