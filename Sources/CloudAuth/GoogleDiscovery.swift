import CVMSupport
import Foundation

/// What the Google client libraries would use here: credentials, project and endpoint overrides.
public struct GoogleConfiguration: Sendable, CustomStringConvertible {
    public var credentials: GoogleCredentials
    /// `GOOGLE_CLOUD_PROJECT`, `CLOUDSDK_CORE_PROJECT`, then the key's project id.
    public var projectId: String?
    /// `https://storage.googleapis.com`, or `STORAGE_EMULATOR_HOST` (with `http://` added when it has no scheme).
    public var storageEndpoint: String
    /// `https://compute.googleapis.com/compute/v1/`, or `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`.
    public var computeEndpoint: String
    /// True when `STORAGE_EMULATOR_HOST` is set (emulators take no token).
    public var usesStorageEmulator: Bool

    public static let defaultStorageEndpoint = "https://storage.googleapis.com"
    public static let defaultComputeEndpoint = "https://compute.googleapis.com/compute/v1/"

    public var description: String {
        "GoogleConfiguration(credentials: \(credentials), projectId: \(projectId ?? "none"), storage: \(storageEndpoint), compute: \(computeEndpoint))"
    }
}

/// Application Default Credentials, as google-auth resolves them (without the metadata server):
/// `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's `application_default_credentials.json`.
public enum GoogleDiscovery {
    public static func resolve(environment: [String: String], home: String) throws -> GoogleConfiguration {
        func env(_ name: String) -> String? {
            guard let value = environment[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        let gcloudDirectory = env("CLOUDSDK_CONFIG") ?? "\(home)/.config/gcloud"
        let adcPath = "\(gcloudDirectory)/application_default_credentials.json"
        let credentials: GoogleCredentials
        if let path = env("GOOGLE_APPLICATION_CREDENTIALS") {
            credentials = try load(path, origin: "GOOGLE_APPLICATION_CREDENTIALS")
        } else if FileManager.default.fileExists(atPath: adcPath) {
            credentials = try load(adcPath, origin: "gcloud application-default credentials")
        } else {
            throw CVMError.usage("no Google credentials found: looked at GOOGLE_APPLICATION_CREDENTIALS (unset) and \(adcPath) (missing); "
                + "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file or run 'gcloud auth application-default login'")
        }
        var project = env("GOOGLE_CLOUD_PROJECT") ?? env("CLOUDSDK_CORE_PROJECT")
        if project == nil {
            switch credentials {
            case .serviceAccount(let account): project = account.projectId
            case .authorizedUser(let user): project = user.quotaProjectId
            }
        }
        var storage = GoogleConfiguration.defaultStorageEndpoint
        let emulator = env("STORAGE_EMULATOR_HOST")
        if let emulator {
            storage = emulator.contains("://") ? emulator : "http://" + emulator
            while storage.hasSuffix("/") { storage.removeLast() }
        }
        var compute = env("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE") ?? GoogleConfiguration.defaultComputeEndpoint
        if !compute.hasSuffix("/") { compute += "/" }
        return GoogleConfiguration(credentials: credentials, projectId: project, storageEndpoint: storage,
                                   computeEndpoint: compute, usesStorageEmulator: emulator != nil)
    }

    private static func load(_ path: String, origin: String) throws -> GoogleCredentials {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CVMError.usage("\(path) (from \(origin)) does not exist; expected a Google credentials JSON file")
        }
        guard let text = AWSDiscovery.readText(path) else {
            throw CVMError.io("\(path) (from \(origin)): cannot read it, or it is larger than 1 MiB")
        }
        return try GoogleCredentials.parse(json: Array(text.utf8), source: path)
    }
}
