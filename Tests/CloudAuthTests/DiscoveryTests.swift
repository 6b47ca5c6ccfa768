import CloudAuth
import CVMCrypto
import CVMSupport
import Foundation
import XCTest

/// Credential discovery over controlled environments and home folders.
final class DiscoveryTests: XCTestCase {
    static let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

    func write(_ text: String, _ home: URL, _ relative: String) throws {
        let url = home.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func usageMessage(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            XCTFail("expected an error")
            return ""
        } catch let error as CVMError {
            return error.message
        } catch {
            XCTFail("unexpected error type \(error)")
            return ""
        }
    }

    // MARK: AWS

    func testAWSEnvironmentWinsAndEndpoints() throws {
        let home = try CloudAuthTestSupport.temporaryDirectory(self)
        try write("[default]\naws_access_key_id = AKIAFILEFILEFILE0000\naws_secret_access_key = filesecret\n", home, ".aws/credentials")
        let config = try AWSDiscovery.resolve(environment: [
            "AWS_ACCESS_KEY_ID": "AKIAENVENVENVENV1234", "AWS_SECRET_ACCESS_KEY": Self.secret, "AWS_SESSION_TOKEN": "tok",
            "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:5001",
        ], home: home.path)
        XCTAssertEqual(config.credentials, AWSCredentials(accessKeyId: "AKIAENVENVENVENV1234", secretAccessKey: Self.secret, sessionToken: "tok", source: "environment"))
        XCTAssertEqual(config.region, "eu-west-1")
        XCTAssertEqual(config.endpoint(for: "s3"), "http://127.0.0.1:5001")
        XCTAssertEqual(config.endpoint(for: "ec2"), "http://127.0.0.1:5000")
        XCTAssertEqual(config.endpoint(for: "ebs"), "http://127.0.0.1:5000")
        let noGlobal = try AWSDiscovery.resolve(environment: [
            "AWS_ACCESS_KEY_ID": "AKIAENVENVENVENV1234", "AWS_SECRET_ACCESS_KEY": Self.secret, "AWS_ENDPOINT_URL_EBS": "http://e",
        ], home: home.path)
        XCTAssertEqual(noGlobal.endpoint(for: "ebs"), "http://e")
        XCTAssertNil(noGlobal.endpoint(for: "ec2"))
        XCTAssertEqual(try config.endpointURL(for: "ec2"), "http://127.0.0.1:5000")
        XCTAssertThrowsError(try noGlobal.endpointURL(for: "ec2"))
        var withRegion = noGlobal
        withRegion.region = "us-east-2"
        XCTAssertEqual(try withRegion.endpointURL(for: "EC2"), "https://ec2.us-east-2.amazonaws.com")
        XCTAssertNil(noGlobal.region)
        XCTAssertTrue(usageMessage { try noGlobal.requireRegion() }.contains("AWS_REGION"))
    }

    func testAWSProfilesFromSharedFiles() throws {
        let home = try CloudAuthTestSupport.temporaryDirectory(self)
        try write("""
            # comment
            [default]
            aws_access_key_id = AKIADEFAULTDEFAULT00
            aws_secret_access_key = defaultsecret

            [dev]
            aws_access_key_id=AKIADEVDEVDEVDEV0000
            aws_secret_access_key = \(Self.secret) ; inline comment
            aws_session_token = devtoken
            """, home, ".aws/credentials")
        try write("""
            [default]
            region = us-east-2
            [profile dev]
            region = eu-west-1
            endpoint_url = http://127.0.0.1:7000
            s3 =
              addressing_style = path
            [profile cfgonly]
            aws_access_key_id = AKIACFGCFGCFGCFG0000
            aws_secret_access_key = cfgsecret
            region = us-west-2
            [profile role]
            role_arn = arn:aws:iam::123456789012:role/x
            source_profile = default
            """, home, ".aws/config")
        let byDefault = try AWSDiscovery.resolve(environment: [:], home: home.path)
        XCTAssertEqual(byDefault.credentials.accessKeyId, "AKIADEFAULTDEFAULT00")
        XCTAssertEqual(byDefault.region, "us-east-2")
        XCTAssertEqual(byDefault.credentials.source, "\(home.path)/.aws/credentials [default]")

        let dev = try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "dev"], home: home.path)
        XCTAssertEqual(dev.credentials, AWSCredentials(accessKeyId: "AKIADEVDEVDEVDEV0000", secretAccessKey: Self.secret, sessionToken: "devtoken",
                                                       source: "\(home.path)/.aws/credentials [dev]"))
        XCTAssertEqual(dev.region, "eu-west-1")
        XCTAssertEqual(dev.endpoint(for: "ec2"), "http://127.0.0.1:7000")
        XCTAssertEqual(try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "dev", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "x"], home: home.path).region, "us-east-1")
        XCTAssertNil(try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "dev", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"], home: home.path).endpoint(for: "ec2"))

        let cfg = try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "cfgonly"], home: home.path)
        XCTAssertEqual(cfg.credentials.accessKeyId, "AKIACFGCFGCFGCFG0000")
        XCTAssertEqual(cfg.region, "us-west-2")

        XCTAssertThrowsError(try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "role"], home: home.path)) { error in
            XCTAssertEqual((error as? CVMError)?.kind, .unsupported)
            XCTAssertTrue("\(error)".contains("role_arn"), "\(error)")
        }
        let missing = usageMessage { try AWSDiscovery.resolve(environment: ["AWS_PROFILE": "nope"], home: home.path) }
        XCTAssertTrue(missing.contains("'nope'") && missing.contains(".aws/credentials") && missing.contains(".aws/config"), missing)
    }

    func testAWSMissingAndPartialCredentials() throws {
        let home = try CloudAuthTestSupport.temporaryDirectory(self)
        let none = usageMessage { try AWSDiscovery.resolve(environment: [:], home: home.path) }
        for part in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "\(home.path)/.aws/credentials", "\(home.path)/.aws/config", "file missing"] {
            XCTAssertTrue(none.contains(part), "\(part) not in: \(none)")
        }
        let partial = usageMessage { try AWSDiscovery.resolve(environment: ["AWS_SECRET_ACCESS_KEY": Self.secret], home: home.path) }
        XCTAssertTrue(partial.contains("AWS_ACCESS_KEY_ID"), partial)
        XCTAssertFalse(partial.contains(Self.secret))
        let custom = home.appendingPathComponent("elsewhere").path
        try write("[default]\naws_access_key_id = AKIAELSEELSEELSE0000\naws_secret_access_key = s\n", home, "elsewhere")
        XCTAssertEqual(try AWSDiscovery.resolve(environment: ["AWS_SHARED_CREDENTIALS_FILE": custom], home: home.path).credentials.accessKeyId, "AKIAELSEELSEELSE0000")
    }

    // MARK: Google

    func testGoogleDiscovery() throws {
        let home = try CloudAuthTestSupport.temporaryDirectory(self)
        let keyPath = home.appendingPathComponent("key.pem").path
        XCTAssertEqual(try CloudAuthTestSupport.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", keyPath]).status, 0)
        let keyFile = home.appendingPathComponent("sa.json")
        try Data(try GoogleJWTTests.keyFile(pem: try String(contentsOfFile: keyPath, encoding: .utf8))).write(to: keyFile)

        let sa = try GoogleDiscovery.resolve(environment: ["GOOGLE_APPLICATION_CREDENTIALS": keyFile.path,
                                                           "STORAGE_EMULATOR_HOST": "localhost:9023",
                                                           "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://127.0.0.1:8090/compute/v1"], home: home.path)
        guard case .serviceAccount(let account) = sa.credentials else { return XCTFail("expected a service account") }
        XCTAssertEqual(account.clientEmail, "uploader@cvm-test.iam.gserviceaccount.com")
        XCTAssertEqual(sa.projectId, "cvm-test")
        XCTAssertEqual(sa.storageEndpoint, "http://localhost:9023")
        XCTAssertTrue(sa.usesStorageEmulator)
        XCTAssertEqual(sa.computeEndpoint, "http://127.0.0.1:8090/compute/v1/")

        // Without the variable: gcloud's ADC file.
        let none = usageMessage { try GoogleDiscovery.resolve(environment: [:], home: home.path) }
        XCTAssertTrue(none.contains("GOOGLE_APPLICATION_CREDENTIALS") && none.contains("\(home.path)/.config/gcloud/application_default_credentials.json"), none)
        try write(#"{"type":"authorized_user","client_id":"cid.apps.googleusercontent.com","client_secret":"csecret","refresh_token":"rtoken"}"#,
                  home, ".config/gcloud/application_default_credentials.json")
        let adc = try GoogleDiscovery.resolve(environment: ["GOOGLE_CLOUD_PROJECT": "p1"], home: home.path)
        guard case .authorizedUser(let user) = adc.credentials else { return XCTFail("expected a user") }
        XCTAssertEqual(user.refreshToken, "rtoken")
        XCTAssertEqual(adc.projectId, "p1")
        XCTAssertEqual(adc.storageEndpoint, "https://storage.googleapis.com")
        XCTAssertEqual(adc.computeEndpoint, "https://compute.googleapis.com/compute/v1/")

        // A variable pointing nowhere is an error even when the ADC file exists.
        let dangling = usageMessage { try GoogleDiscovery.resolve(environment: ["GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/sa.json"], home: home.path) }
        XCTAssertTrue(dangling.contains("/nonexistent/sa.json") && dangling.contains("GOOGLE_APPLICATION_CREDENTIALS"), dangling)
    }

    // MARK: Azure

    func testAzureStorageCredentials() throws {
        let key = Base64.encode(Array("0123456789abcdef0123456789abcdef".utf8))
        let fromString = try AzureDiscovery.storageCredentials(environment: [
            "AZURE_STORAGE_CONNECTION_STRING": "DefaultEndpointsProtocol=https;AccountName=cvmacct;AccountKey=\(key);EndpointSuffix=core.chinacloudapi.cn",
        ])
        XCTAssertEqual(fromString.accountName, "cvmacct")
        XCTAssertEqual(fromString.key, Array("0123456789abcdef0123456789abcdef".utf8))
        XCTAssertEqual(fromString.blobEndpoint, "https://cvmacct.blob.core.chinacloudapi.cn")
        let explicitEndpoint = try AzureDiscovery.parseConnectionString("AccountName=a;AccountKey=\(key);BlobEndpoint=http://127.0.0.1:10000/a/", source: "t")
        XCTAssertEqual(explicitEndpoint.blobEndpoint, "http://127.0.0.1:10000/a")
        XCTAssertEqual(try AzureDiscovery.parseConnectionString("DefaultEndpointsProtocol=http;AccountName=a;AccountKey=\(key)", source: "t").blobEndpoint,
                       "http://a.blob.core.windows.net")
        let dev = try AzureDiscovery.parseConnectionString("UseDevelopmentStorage=true", source: "t")
        XCTAssertEqual(dev.accountName, "devstoreaccount1")
        XCTAssertEqual(dev.blobEndpoint, "http://127.0.0.1:10000/devstoreaccount1")

        let pair = try AzureDiscovery.storageCredentials(environment: ["AZURE_STORAGE_ACCOUNT": "acct2", "AZURE_STORAGE_KEY": key])
        XCTAssertEqual(pair.blobEndpoint, "https://acct2.blob.core.windows.net")

        let none = usageMessage { try AzureDiscovery.storageCredentials(environment: [:]) }
        XCTAssertTrue(none.contains("AZURE_STORAGE_CONNECTION_STRING") && none.contains("AZURE_STORAGE_KEY"), none)
        XCTAssertTrue(usageMessage { try AzureDiscovery.storageCredentials(environment: ["AZURE_STORAGE_ACCOUNT": "a"]) }.contains("AZURE_STORAGE_KEY is not"))
        for bad in ["AccountName=a", "AccountKey=\(key)", "AccountName=a;AccountKey=not base64!!", "AccountName=a;AccountKey=\(key);junk",
                    "AccountName=a;SharedAccessSignature=sv=2021&sig=abc"] {
            XCTAssertThrowsError(try AzureDiscovery.parseConnectionString(bad, source: "AZURE_STORAGE_CONNECTION_STRING"), bad)
        }
    }

    func testEntraClientCredentials() throws {
        let env = ["AZURE_TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47", "AZURE_CLIENT_ID": "00000000-1111-2222-3333-444444444444",
                   "AZURE_CLIENT_SECRET": "Abc~def.ghi+jkl/mno=="]
        let entra = try AzureDiscovery.entraCredentials(environment: env)
        XCTAssertEqual(entra.tokenURL, "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token")
        let request = entra.tokenRequest()
        XCTAssertEqual(request.url, entra.tokenURL)
        XCTAssertEqual(GoogleJWTTests.decodeForm(request.body).map { "\($0.0)=\($0.1)" }, [
            "grant_type=client_credentials", "client_id=00000000-1111-2222-3333-444444444444",
            "client_secret=Abc~def.ghi+jkl/mno==", "scope=https://management.azure.com/.default",
        ])
        var custom = env
        custom["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.us/"
        XCTAssertEqual(try AzureDiscovery.entraCredentials(environment: custom).tokenURL,
                       "https://login.microsoftonline.us/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token")
        custom["AZURE_AUTHORITY_HOST"] = "http://127.0.0.1:8400"
        XCTAssertEqual(try AzureDiscovery.entraCredentials(environment: custom).tokenURL,
                       "http://127.0.0.1:8400/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token")
        custom["AZURE_AUTHORITY_HOST"] = "http://login.example.com"
        XCTAssertThrowsError(try AzureDiscovery.entraCredentials(environment: custom))
        custom = env
        custom["AZURE_TENANT_ID"] = "evil/../x?"
        XCTAssertThrowsError(try AzureDiscovery.entraCredentials(environment: custom))
        let missing = usageMessage { try AzureDiscovery.entraCredentials(environment: ["AZURE_TENANT_ID": "t"]) }
        XCTAssertTrue(missing.contains("AZURE_CLIENT_ID, AZURE_CLIENT_SECRET are not set"), missing)
    }
}
