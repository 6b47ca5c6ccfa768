#if canImport(Glibc)
import Glibc
#endif
import Foundation
import CVMSupport

/// One parsed HTTP/1.1 request (the agent's API is small: no chunked bodies, no keep-alive).
struct HTTPRequest {
    var method: String
    var path: String
    var headers: [String: String]
    var body: [UInt8]
}

struct HTTPResponse {
    var status: Int
    var contentType = "application/json"
    var body: [UInt8]

    static func json(_ status: Int, _ text: String) -> HTTPResponse { HTTPResponse(status: status, body: Array(text.utf8)) }

    static let reasons = [200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                          405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 413: "Payload Too Large", 415: "Unsupported Media Type", 500: "Internal Server Error"]

    func encoded() -> [UInt8] {
        let head = "HTTP/1.1 \(status) \(Self.reasons[status] ?? "Status")\r\nContent-Type: \(contentType)\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }
}

/// A byte stream of one connection: plain TCP or TLS.
protocol Connection: AnyObject {
    func read(into buffer: inout [UInt8]) -> Int
    func write(_ bytes: [UInt8]) -> Bool
    func close()
}

final class PlainConnection: Connection {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    func read(into buffer: inout [UInt8]) -> Int {
        buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
    }
    func write(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }
    func close() { Glibc.close(fd) }
}

/// A listening TCP socket that serves each connection on its own thread.
final class HTTPServer: @unchecked Sendable {
    let port: UInt16
    let listener: Int32
    let maxBody: Int
    let wrap: (Int32) -> Connection?
    let handler: (HTTPRequest) -> HTTPResponse

    init(port: UInt16, maxBody: Int = 64 << 20, wrap: @escaping (Int32) -> Connection? = { PlainConnection(fd: $0) },
         handler: @escaping (HTTPRequest) -> HTTPResponse) throws {
        self.port = port
        self.maxBody = maxBody
        self.wrap = wrap
        self.handler = handler
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw CVMError.io("socket: \(errnoDescription())") }
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr = in_addr(s_addr: INADDR_ANY)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else { throw CVMError.io("port \(port): cannot listen: \(errnoDescription())") }
    }

    func start() {
        let thread = Thread { [self] in
            while true {
                let fd = accept(listener, nil, nil)
                if fd < 0 { continue }
                var timeout = timeval(tv_sec: 30, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let worker = Thread { [self] in self.serve(fd) }
                worker.start()
            }
        }
        thread.start()
    }

    func serve(_ fd: Int32) {
        guard let conn = wrap(fd) else { Glibc.close(fd); return }
        defer { conn.close() }
        let response: HTTPResponse
        switch readRequest(conn) {
        case .success(let request): response = handler(request)
        case .failure(let error): response = .json(error.status, "{\"error\":\"\(error.message)\"}")
        }
        _ = conn.write(response.encoded())
    }

    struct RequestError: Error { let status: Int; let message: String }

    func readRequest(_ conn: Connection) -> Result<HTTPRequest, RequestError> {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int?
        while headerEnd == nil {
            let n = conn.read(into: &buffer)
            if n <= 0 { return .failure(RequestError(status: 400, message: "incomplete request")) }
            data += buffer.prefix(n)
            if let r = firstRange(of: separator, in: data) { headerEnd = r }
            if headerEnd == nil && data.count > 16384 { return .failure(RequestError(status: 400, message: "headers too large")) }
        }
        let head = String(decoding: data[..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3 else { return .failure(RequestError(status: 400, message: "bad request line")) }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Array(data[(headerEnd! + 4)...])
        let length = Int(headers["content-length"] ?? "0") ?? -1
        guard length >= 0 else { return .failure(RequestError(status: 400, message: "bad Content-Length")) }
        guard length <= maxBody else { return .failure(RequestError(status: 413, message: "body larger than \(maxBody) bytes")) }
        while body.count < length {
            let n = conn.read(into: &buffer)
            if n <= 0 { return .failure(RequestError(status: 400, message: "incomplete body")) }
            body += buffer.prefix(n)
        }
        return .success(HTTPRequest(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers,
                                    body: Array(body.prefix(length))))
    }

    func firstRange(of needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<i + needle.count]) == needle {
            return i
        }
        return nil
    }
}
