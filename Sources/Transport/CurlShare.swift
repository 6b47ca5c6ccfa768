import CCurl
import Foundation

/// libcurl's process-wide setup, done once before the first handle (curl_global_init is not
/// thread-safe, a Swift static `let` is initialised exactly once).
enum CurlGlobal {
    static let initialized: Bool = curl_global_init(Int(CURL_GLOBAL_ALL)) == CURLE_OK
}

/// A curl share handle: DNS answers and TLS sessions are shared by every easy handle of a
/// client, so a new connection to a known host skips the lookup and the full handshake.
/// libcurl calls the lock functions from any transfer thread.
final class CurlShare: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private let locks: UnsafeMutablePointer<pthread_mutex_t>
    private static let lockCount = 16

    init?() {
        _ = CurlGlobal.initialized
        guard let h = curl_share_init() else { return nil }
        handle = h
        locks = .allocate(capacity: CurlShare.lockCount)
        for i in 0..<CurlShare.lockCount { pthread_mutex_init(locks + i, nil) }
        _ = cvm_curl_share_setopt_userdata(h, UnsafeMutableRawPointer(locks))
        _ = cvm_curl_share_setopt_lock(h) { _, data, _, user in
            guard let user else { return }
            let index = Int(data.rawValue) % CurlShare.lockCount
            pthread_mutex_lock(user.assumingMemoryBound(to: pthread_mutex_t.self) + index)
        }
        _ = cvm_curl_share_setopt_unlock(h) { _, data, user in
            guard let user else { return }
            let index = Int(data.rawValue) % CurlShare.lockCount
            pthread_mutex_unlock(user.assumingMemoryBound(to: pthread_mutex_t.self) + index)
        }
        _ = cvm_curl_share_setopt_long(h, CURLSHOPT_SHARE, Int(CURL_LOCK_DATA_DNS.rawValue))
        _ = cvm_curl_share_setopt_long(h, CURLSHOPT_SHARE, Int(CURL_LOCK_DATA_SSL_SESSION.rawValue))
    }

    deinit {
        curl_share_cleanup(handle)
        for i in 0..<CurlShare.lockCount { pthread_mutex_destroy(locks + i) }
        locks.deallocate()
    }
}

/// Idle easy handles kept for reuse: a reused handle keeps its open connections (keep-alive,
/// HTTP/2), which is why handles are pooled rather than created per request.
final class EasyHandlePool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [UnsafeMutableRawPointer] = []

    func take() throws -> UnsafeMutableRawPointer {
        if let h = lock.withLock({ idle.popLast() }) { return h }
        _ = CurlGlobal.initialized
        guard let h = curl_easy_init() else {
            throw TransportFailure.setup("libcurl could not create a transfer handle")
        }
        return h
    }

    func give(_ handle: UnsafeMutableRawPointer) {
        lock.withLock { idle.append(handle) }
    }

    /// A handle whose transfer failed oddly is closed rather than reused.
    func discard(_ handle: UnsafeMutableRawPointer) {
        curl_easy_cleanup(handle)
    }

    func closeAll() {
        let handles = lock.withLock { () -> [UnsafeMutableRawPointer] in
            defer { idle = [] }
            return idle
        }
        for h in handles { curl_easy_cleanup(h) }
    }

    deinit { closeAll() }
}
