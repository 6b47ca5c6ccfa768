/// The one error type of cvm-cli. Messages are for humans: they name the file or flag
/// and say what was expected, on one line, and never contain secrets.
public struct CVMError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Bad flags or arguments (exit status 64).
        case usage
        /// The input is not what we can read: unknown format, corrupt, truncated (exit 1).
        case invalidInput
        /// An operating-system call failed (exit 1).
        case io
        /// The requested operation is valid but not supported (exit 1).
        case unsupported
        /// The operation was interrupted by a signal (exit 130).
        case interrupted
        /// The data does not fit where it must go (a file system, a partition) (exit 1).
        case noSpace
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// Process exit status for this error: 64 for usage errors, 130 when interrupted, else 1.
    public var exitStatus: Int32 {
        switch kind {
        case .usage: return 64
        case .interrupted: return 130
        default: return 1
        }
    }

    public static func usage(_ m: String) -> CVMError { CVMError(.usage, m) }
    public static func invalid(_ m: String) -> CVMError { CVMError(.invalidInput, m) }
    public static func io(_ m: String) -> CVMError { CVMError(.io, m) }
    public static func unsupported(_ m: String) -> CVMError { CVMError(.unsupported, m) }
}
