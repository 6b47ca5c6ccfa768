/// An AWS access key (long-term or temporary). `description` never shows the secret or token.
public struct AWSCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var accessKeyId: String
    public var secretAccessKey: String
    /// STS session token of temporary credentials; sent as `x-amz-security-token`.
    public var sessionToken: String?
    /// Where the key was found, for messages ("environment", "~/.aws/credentials [dev]").
    public var source: String

    public init(accessKeyId: String, secretAccessKey: String, sessionToken: String? = nil, source: String = "explicit") {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.source = source
    }

    public var description: String {
        "AWSCredentials(accessKeyId: \(Redaction.identifier(accessKeyId)), secretAccessKey: \(Redaction.secret), "
            + "sessionToken: \(Redaction.optionalSecret(sessionToken)), source: \(source))"
    }

    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["description": description]) }
}
