import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// Formats every credential, configuration, token request and error we produce, every way Swift
/// can print them, and checks that no secret value appears.
final class RedactionTests: XCTestCase {
    func renderings(_ value: Any) -> [String] {
        var dumped = ""
        dump(value, to: &dumped)
        return ["\(value)", String(describing: value), String(reflecting: value), dumped]
    }

    func testNoSecretInAnyRendering() throws {
        let home = try CloudAuthTestSupport.temporaryDirectory(self)
        let pemPath = home.appendingPathComponent("key.pem").path
        XCTAssertEqual(try CloudAuthTestSupport.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pemPath]).status, 0)
        let pem = try String(contentsOfFile: pemPath, encoding: .utf8)
        let pemLines = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.map(String.init)

        let awsSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
        let awsToken = "FwoGZXIvYXdzSESSIONTOKENVALUE0123456789"
        let azureKeyBytes = Array("azure-account-key-bytes-0123456789".utf8)
        let azureKey = Base64.encode(azureKeyBytes)
        let entraSecret = "entra~client.secret+VALUE"
        let googleClientSecret = "d-FL95Q19q7MQmFpd7hHDSECRET"
        let refreshToken = "1//0gREFRESHTOKENVALUE"
        var secrets = [awsSecret, awsToken, azureKey, entraSecret, googleClientSecret, refreshToken] + pemLines

        // Credentials and configurations found by discovery.
        var rendered = [Any]()
        let aws = try AWSDiscovery.resolve(environment: ["AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "AWS_SECRET_ACCESS_KEY": awsSecret,
                                                         "AWS_SESSION_TOKEN": awsToken, "AWS_REGION": "us-east-2"], home: home.path)
        rendered += [aws, aws.credentials]
        XCTAssertTrue("\(aws.credentials)".contains("AKIA…MPLE"), "\(aws.credentials)")
        let storage = try AzureDiscovery.storageCredentials(environment: [
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=\(azureKey);EndpointSuffix=core.windows.net"])
        rendered.append(storage)
        let entra = try AzureDiscovery.entraCredentials(environment: ["AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": entraSecret])
        rendered += [entra, entra.tokenRequest()]
        let keyFile = home.appendingPathComponent("sa.json")
        try Data(try GoogleJWTTests.keyFile(pem: pem)).write(to: keyFile)
        let google = try GoogleDiscovery.resolve(environment: ["GOOGLE_APPLICATION_CREDENTIALS": keyFile.path], home: home.path)
        let assertionRequest = try google.credentials.tokenRequest(at: Date(timeIntervalSince1970: 1_700_000_000))
        let assertion = String(GoogleJWTTests.decodeForm(assertionRequest.body)[1].1)
        secrets.append(assertion)
        rendered += [google, google.credentials, assertionRequest]
        if case .serviceAccount(let account) = google.credentials { rendered += [account, account.privateKey] }
        let user = try GoogleCredentials.parse(json: Array(try JSONSerialization.data(withJSONObject: [
            "type": "authorized_user", "client_id": "cid.apps.googleusercontent.com", "client_secret": googleClientSecret, "refresh_token": refreshToken])),
            source: "adc.json")
        rendered += [user, try user.tokenRequest(at: Date())]
        if case .authorizedUser(let u) = user { rendered.append(u) }

        // Every error path that handles a secret.
        var errors = [Error]()
        func capture(_ body: () throws -> Any) {
            do { _ = try body(); XCTFail("expected an error") } catch { errors.append(error) }
        }
        capture { try AWSDiscovery.resolve(environment: ["AWS_SECRET_ACCESS_KEY": awsSecret, "AWS_SESSION_TOKEN": awsToken], home: home.path) }
        capture { try AWSDiscovery.resolve(environment: ["AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"], home: home.path) }
        capture { try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "missing"], home: home.path) }
        capture { try AWSSigV4Signer(credentials: aws.credentials, region: "r", service: "s3").presign(SignableRequest(method: "GET", host: "h"), expires: 0, at: Date()) }
        capture { try AzureDiscovery.parseConnectionString("AccountName=acct;AccountKey=\(entraSecret)!!", source: "AZURE_STORAGE_CONNECTION_STRING") }
        capture { try AzureDiscovery.parseConnectionString("AccountKey=\(azureKey)", source: "AZURE_STORAGE_CONNECTION_STRING") }
        capture { try AzureDiscovery.parseConnectionString("AccountName=a;AccountKey=\(azureKey);\(entraSecret)", source: "AZURE_STORAGE_CONNECTION_STRING") }
        capture { try AzureDiscovery.storageCredentials(environment: ["AZURE_STORAGE_KEY": azureKey]) }
        capture { try AzureDiscovery.entraCredentials(environment: ["AZURE_CLIENT_SECRET": entraSecret]) }
        capture { try AzureDiscovery.entraCredentials(environment: ["AZURE_TENANT_ID": "bad/tenant", "AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": entraSecret]) }
        capture { try EntraClientCredentials(tenantId: "t", clientId: "c", clientSecret: entraSecret, authorityHost: "http://example.com") }
        capture { try GoogleCredentials.parse(json: Array(#"{"type":"authorized_user","client_secret":"\#(googleClientSecret)","refresh_token":"\#(refreshToken)"}"#.utf8), source: "adc.json") }
        capture { try GoogleCredentials.parse(json: Array(try JSONSerialization.data(withJSONObject: ["type": "service_account", "client_email": "e", "private_key": String(pem.dropLast(200))])), source: "sa.json") }
        capture { try GoogleCredentials.parse(json: Array(try JSONSerialization.data(withJSONObject: ["type": refreshToken, "private_key": pem])), source: "sa.json") }
        capture { try RSAPrivateKey(pem: pem.replacingOccurrences(of: "PRIVATE KEY", with: "PUBLIC KEY"), source: "k") }
        if case .serviceAccount(let account) = google.credentials {
            capture { try account.assertion(scopes: [], at: Date()) }
            capture { try account.assertion(scopes: ["s"], at: Date(), lifetime: 7200) }
        }
        XCTAssertGreaterThanOrEqual(errors.count, 17)
        for error in errors {
            XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
        }

        for value in rendered + errors.map({ $0 as Any }) {
            for text in renderings(value) {
                for secret in secrets where text.contains(secret) {
                    XCTFail("secret \(secret.prefix(6))… appears in: \(text.prefix(300))")
                }
            }
        }
    }
}
