import CloudAuth
import CVMSupport
import Foundation
import Transport

/// Metadata reads and deletes of single GCS objects (JSON API), for deploy-gcp's reuse check
/// and for removing the uploaded archive once the image holds it.
struct GCSObjects {
    let client: HTTPClient
    let tokens: GoogleAccessTokenSource
    /// `https://storage.googleapis.com` or `STORAGE_EMULATOR_HOST`.
    let endpoint: String

    func url(_ object: GCSObjectName) -> String {
        "\(endpoint)/storage/v1/b/\(PercentEncoding.encode(object.bucket))/o/\(PercentEncoding.encode(object.object))"
    }

    /// The object's resource, nil when it does not exist.
    func metadata(_ object: GCSObjectName) throws -> [String: Any]? {
        var request = HTTPRequest(method: "GET", url: url(object), sign: tokens.requestSigner)
        request.acceptedStatuses = Set(200..<300).union([404])
        request.deadline = 120
        let response: HTTPResponse
        do { response = try client.send(request) } catch let e as CVMError {
            throw CVMError(e.kind, "GCS storage.objects.get \(object): \(e.message)")
        }
        if response.status == 404 { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
    }

    /// Deletes the object; false when it was already gone.
    @discardableResult
    func delete(_ object: GCSObjectName) throws -> Bool {
        var request = HTTPRequest(method: "DELETE", url: url(object), sign: tokens.requestSigner)
        request.acceptedStatuses = Set(200..<300).union([404])
        request.deadline = 120
        do { return try client.send(request).status != 404 } catch let e as CVMError {
            throw CVMError(e.kind, "GCS storage.objects.delete \(object): \(e.message)")
        }
    }

    /// Names of the objects whose names start with `prefix` (all pages).
    func list(bucket: String, prefix: String) throws -> [String] {
        var names: [String] = []
        var pageToken: String?
        repeat {
            var url = "\(endpoint)/storage/v1/b/\(PercentEncoding.encode(bucket))/o?prefix=\(PercentEncoding.encode(prefix))"
            if let pageToken { url += "&pageToken=\(PercentEncoding.encode(pageToken))" }
            var request = HTTPRequest(method: "GET", url: url, sign: tokens.requestSigner)
            request.deadline = 120
            let response: HTTPResponse
            do { response = try client.send(request) } catch let e as CVMError {
                throw CVMError(e.kind, "GCS storage.objects.list gs://\(bucket)/\(prefix)*: \(e.message)")
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
            names += ((object["items"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String }
            pageToken = object["nextPageToken"] as? String
        } while pageToken != nil
        return names
    }
}
