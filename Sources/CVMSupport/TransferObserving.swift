/// The callbacks every upload takes from its caller: progress, cancellation and step lines.
/// One protocol so a command wires them the same way for each destination.
public protocol TransferObserving {
    /// Called with (bytes done, bytes total) as the transfer advances, from any thread.
    var progress: (@Sendable (UInt64, UInt64) -> Void)? { get set }
    /// Polled during transfers; true stops the transfer with an `interrupted` error.
    var isCancelled: (@Sendable () -> Bool)? { get set }
    /// One line per step for `--verbose`.
    var log: (@Sendable (String) -> Void)? { get set }
}
