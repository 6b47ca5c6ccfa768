/// How credentials show up in logs and errors: identifiers shortened, secrets never shown.
public enum Redaction {
    /// The marker printed instead of a secret.
    public static let secret = "<redacted>"

    /// An identifier that helps a human recognise which key is in use without revealing it:
    /// first four and last four characters (`AKIA…XYZ1`); short values are fully redacted.
    public static func identifier(_ value: String) -> String {
        let characters = Array(value)
        guard characters.count >= 12 else { return secret }
        return String(characters.prefix(4)) + "…" + String(characters.suffix(4))
    }

    /// `<redacted>` when present, `none` when absent: shows whether a secret is set.
    public static func optionalSecret(_ value: String?) -> String {
        guard let value, !value.isEmpty else { return "none" }
        return secret
    }
}
