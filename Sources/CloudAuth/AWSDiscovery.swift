import CVMSupport
import Foundation

/// What the AWS SDKs would use in this environment: credentials, region and endpoint overrides.
public struct AWSConfiguration: Sendable, Equatable, CustomStringConvertible {
    public var credentials: AWSCredentials
    /// `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`; nil when none is set.
    public var region: String?
    public var profile: String
    /// Endpoint overrides by service id (`s3`, `ec2`, `ebs`) plus `""` for the global one.
    public var endpointOverrides: [String: String]

    /// `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else the profile's `endpoint_url`;
    /// nil means the service's public endpoint.
    public func endpoint(for service: String) -> String? {
        endpointOverrides[service.lowercased()] ?? endpointOverrides[""]
    }

    /// The override for `service`, else its public regional endpoint
    /// (`https://<service>.<region>.amazonaws.com`; needs a region).
    public func endpointURL(for service: String) throws -> String {
        if let url = endpoint(for: service) { return url }
        return "https://\(service.lowercased()).\(try requireRegion()).amazonaws.com"
    }

    /// The region, or a usage error naming where it was looked for.
    public func requireRegion() throws -> String {
        guard let region else {
            throw CVMError.usage("no AWS region set: looked at AWS_REGION, AWS_DEFAULT_REGION and the 'region' of profile '\(profile)'; set AWS_REGION or pass --region")
        }
        return region
    }

    public var description: String {
        "AWSConfiguration(credentials: \(credentials), region: \(region ?? "none"), profile: \(profile), endpoints: \(endpointOverrides.sorted { $0.key < $1.key }))"
    }
}

/// Resolves AWS settings the way the SDKs do, over an environment dictionary and a home folder
/// (so tests control both). Supports static keys from the environment and shared files; roles,
/// SSO and `credential_process` profiles are reported as unsupported rather than ignored.
public enum AWSDiscovery {
    /// The services whose `AWS_ENDPOINT_URL_<SERVICE>` we read.
    public static let services = ["s3", "ec2", "ebs", "sts"]

    public static func resolve(environment: [String: String], home: String) throws -> AWSConfiguration {
        func env(_ name: String) -> String? {
            guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        let explicitProfile = env("AWS_PROFILE") ?? env("AWS_DEFAULT_PROFILE")
        let profile = explicitProfile ?? "default"
        let credentialsPath = env("AWS_SHARED_CREDENTIALS_FILE").map { expandHome($0, home) } ?? "\(home)/.aws/credentials"
        let configPath = env("AWS_CONFIG_FILE").map { expandHome($0, home) } ?? "\(home)/.aws/config"
        let credentialsFile = readINI(credentialsPath)
        let configFile = readINI(configPath)
        let credentialsSection = credentialsFile?.section(profile)
        let configSection = configFile?.section(profile == "default" ? "default" : "profile \(profile)")
            ?? (profile == "default" ? configFile?.section("profile default") : nil)

        if explicitProfile != nil, credentialsSection == nil, configSection == nil,
           env("AWS_ACCESS_KEY_ID") == nil {
            throw CVMError.usage("AWS profile '\(profile)' (from AWS_PROFILE) not found: looked in \(credentialsPath) [\(profile)] and \(configPath) [profile \(profile)]")
        }

        let credentials = try resolveCredentials(env: env, profile: profile, credentialsPath: credentialsPath,
                                                 configPath: configPath, credentialsSection: credentialsSection,
                                                 configSection: configSection)
        let region = env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? nonEmpty(configSection?["region"])

        var endpoints = [String: String]()
        let ignoreConfigured = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")?.lowercased() == "true"
        if !ignoreConfigured {
            if let url = nonEmpty(configSection?["endpoint_url"]) { endpoints[""] = url }
            if let url = env("AWS_ENDPOINT_URL") { endpoints[""] = url }
            for service in services {
                if let url = env("AWS_ENDPOINT_URL_\(service.uppercased())") { endpoints[service] = url }
            }
        }
        return AWSConfiguration(credentials: credentials, region: region, profile: profile, endpointOverrides: endpoints)
    }

    private static func resolveCredentials(env: (String) -> String?, profile: String, credentialsPath: String, configPath: String,
                                           credentialsSection: [String: String]?, configSection: [String: String]?) throws -> AWSCredentials {
        let accessKey = env("AWS_ACCESS_KEY_ID")
        let secretKey = env("AWS_SECRET_ACCESS_KEY")
        if let accessKey, let secretKey {
            return AWSCredentials(accessKeyId: accessKey, secretAccessKey: secretKey,
                                  sessionToken: env("AWS_SESSION_TOKEN"), source: "environment")
        }
        if (accessKey == nil) != (secretKey == nil) {
            let missing = accessKey == nil ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY"
            let present = accessKey == nil ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID"
            throw CVMError.usage("AWS credentials in the environment are incomplete: \(present) is set but \(missing) is not; set both or neither")
        }
        for (section, path, label) in [(credentialsSection, credentialsPath, "[\(profile)]"),
                                       (configSection, configPath, profile == "default" ? "[default]" : "[profile \(profile)]")] {
            guard let section else { continue }
            let id = nonEmpty(section["aws_access_key_id"])
            let secret = nonEmpty(section["aws_secret_access_key"])
            if let id, let secret {
                return AWSCredentials(accessKeyId: id, secretAccessKey: secret,
                                      sessionToken: nonEmpty(section["aws_session_token"]), source: "\(path) \(label)")
            }
            if id != nil || secret != nil {
                throw CVMError.usage("\(path) \(label): only one of aws_access_key_id and aws_secret_access_key is set; expected both")
            }
            if let kind = ["role_arn", "sso_session", "sso_start_url", "credential_process", "web_identity_token_file"].first(where: { section[$0] != nil }) {
                throw CVMError.unsupported("\(path) \(label) uses '\(kind)', which cvm-cli does not support yet; expected static keys (aws_access_key_id/aws_secret_access_key) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
            }
        }
        throw CVMError.usage("no AWS credentials found: looked at AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            + "\(credentialsPath) [\(profile)] (\(describe(credentialsPath, credentialsSection))) and "
            + "\(configPath) [\(profile == "default" ? "default" : "profile \(profile)")] (\(describe(configPath, configSection))); "
            + "set the variables or a profile with aws_access_key_id and aws_secret_access_key")
    }

    private static func describe(_ path: String, _ section: [String: String]?) -> String {
        if !FileManager.default.fileExists(atPath: path) { return "file missing" }
        return section == nil ? "no such section" : "no keys"
    }

    private static func nonEmpty(_ value: String?) -> String? {
        guard let value, !value.isEmpty else { return nil }
        return value
    }

    static func expandHome(_ path: String, _ home: String) -> String {
        path == "~" ? home : (path.hasPrefix("~/") ? home + path.dropFirst(1) : path)
    }

    /// A bounded read of a small config file; nil when absent or unreadable.
    static func readText(_ path: String, limit: Int = 1 << 20) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: limit + 1), data.count <= limit else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    private static func readINI(_ path: String) -> INIFile? {
        readText(path).map { INIFile(text: $0) }
    }
}
