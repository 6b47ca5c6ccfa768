import CVMSupport
import Foundation

/// Azure settings from the environment, as the Azure SDKs read them.
public enum AzureDiscovery {
    /// Azurite's published development account (not a secret).
    static let developmentAccount = "devstoreaccount1"
    static let developmentKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    /// Storage account key from `AZURE_STORAGE_CONNECTION_STRING`, else `AZURE_STORAGE_ACCOUNT` +
    /// `AZURE_STORAGE_KEY`. SAS tokens are not supported.
    public static func storageCredentials(environment: [String: String]) throws -> AzureStorageCredentials {
        if let connection = environment["AZURE_STORAGE_CONNECTION_STRING"], !connection.isEmpty {
            return try parseConnectionString(connection, source: "AZURE_STORAGE_CONNECTION_STRING")
        }
        let account = environment["AZURE_STORAGE_ACCOUNT"].flatMap { $0.isEmpty ? nil : $0 }
        let key = environment["AZURE_STORAGE_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        if let account, let key {
            return try AzureStorageCredentials(accountName: account, accountKey: key, source: "AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY")
        }
        let detail = account != nil ? " (AZURE_STORAGE_ACCOUNT is set but AZURE_STORAGE_KEY is not)"
            : (key != nil ? " (AZURE_STORAGE_KEY is set but AZURE_STORAGE_ACCOUNT is not)" : "")
        throw CVMError.usage("no Azure storage key found: looked at AZURE_STORAGE_CONNECTION_STRING and AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY\(detail); "
            + "set one of them (the key comes from the portal or 'az storage account keys list')")
    }

    /// Parses `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=…`
    /// (or `BlobEndpoint=…`, or `UseDevelopmentStorage=true`). Errors never quote the string.
    public static func parseConnectionString(_ text: String, source: String) throws -> AzureStorageCredentials {
        var fields = [String: String]()
        for part in text.split(separator: ";") {
            let item = part.trimmingCharacters(in: .whitespaces)
            if item.isEmpty { continue }
            guard let equals = item.firstIndex(of: "=") else {
                throw CVMError.usage("\(source): a part has no '='; expected Key=Value pairs separated by ';'")
            }
            fields[item[..<equals].lowercased()] = String(item[item.index(after: equals)...])
        }
        if fields["usedevelopmentstorage"]?.lowercased() == "true" {
            let endpoint = fields["developmentstorageproxyuri"].map { "\($0)/\(developmentAccount)" }
                ?? "http://127.0.0.1:10000/\(developmentAccount)"
            return try AzureStorageCredentials(accountName: developmentAccount, accountKey: developmentKey,
                                               blobEndpoint: endpoint, source: source)
        }
        if fields["sharedaccesssignature"] != nil && fields["accountkey"] == nil {
            throw CVMError.unsupported("\(source): SAS connection strings are not supported; expected AccountName and AccountKey")
        }
        guard let account = fields["accountname"], !account.isEmpty else {
            throw CVMError.usage("\(source): AccountName is missing; expected AccountName=<storage account>")
        }
        guard let key = fields["accountkey"], !key.isEmpty else {
            throw CVMError.usage("\(source): AccountKey is missing; expected AccountKey=<base64 key>")
        }
        let endpoint: String
        if let blob = fields["blobendpoint"], !blob.isEmpty {
            endpoint = blob
        } else {
            let scheme = (fields["defaultendpointsprotocol"] ?? "https").lowercased()
            guard scheme == "https" || scheme == "http" else {
                throw CVMError.usage("\(source): DefaultEndpointsProtocol must be https or http")
            }
            let suffix = fields["endpointsuffix"].flatMap { $0.isEmpty ? nil : $0 } ?? "core.windows.net"
            endpoint = "\(scheme)://\(account).blob.\(suffix)"
        }
        return try AzureStorageCredentials(accountName: account, accountKey: key, blobEndpoint: endpoint, source: source)
    }

    /// Service-principal secret from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`
    /// (and optional `AZURE_AUTHORITY_HOST`).
    public static func entraCredentials(environment: [String: String]) throws -> EntraClientCredentials {
        let names = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]
        let missing = names.filter { (environment[$0] ?? "").isEmpty }
        guard missing.isEmpty else {
            throw CVMError.usage("no Azure service principal found: \(missing.joined(separator: ", ")) \(missing.count == 1 ? "is" : "are") not set "
                + "(looked at AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET); create one with 'az ad sp create-for-rbac'")
        }
        let authority = environment["AZURE_AUTHORITY_HOST"].flatMap { $0.isEmpty ? nil : $0 }
        return try EntraClientCredentials(tenantId: environment["AZURE_TENANT_ID"]!, clientId: environment["AZURE_CLIENT_ID"]!,
                                          clientSecret: environment["AZURE_CLIENT_SECRET"]!, authorityHost: authority,
                                          source: "environment")
    }

    /// `AZURE_SUBSCRIPTION_ID`, or a usage error.
    public static func subscriptionId(environment: [String: String]) throws -> String {
        guard let id = environment["AZURE_SUBSCRIPTION_ID"], !id.isEmpty else {
            throw CVMError.usage("AZURE_SUBSCRIPTION_ID is not set; expected the subscription to create resources in")
        }
        return id
    }
}
