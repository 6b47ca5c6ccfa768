/// A parsed JSON value that keeps booleans, numbers and strings apart, as RFC 8785 (JSON
/// Canonicalization Scheme) sees it: numbers are IEEE-754 doubles, object member order does not
/// matter, and duplicate member names are refused. Used for signed documents (canonical bytes)
/// and for the agent policy (types matter: `"port": 8000` instead of `"8000"` is an error).
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// Where and why a text is not JSON.
public struct JSONSyntaxError: Error, Sendable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    public let reason: String
    public var description: String { "line \(line), column \(column): \(reason)" }
}

/// Strict RFC 8259 / I-JSON parsing and RFC 8785 serialization, written for signatures: the
/// canonical bytes of a document are the same whatever whitespace, member order or escaping
/// the file used. (Foundation's serializer escapes `/` and orders keys by code point, which
/// RFC 8785 does not.)
public enum CanonicalJSON {
    /// Parses one JSON text; a syntax error becomes a `CVMError` naming `source` and the position.
    public static func parse(_ bytes: [UInt8], source: String) throws -> JSONValue {
        do {
            return try parse(bytes)
        } catch let error as JSONSyntaxError {
            throw CVMError.invalid("\(source): not valid JSON at \(error)")
        }
    }

    /// Parses one JSON text; throws `JSONSyntaxError`.
    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var parser = Parser(bytes: bytes)
        return try parser.document()
    }

    /// The RFC 8785 canonical UTF-8 bytes of `value`.
    public static func canonicalBytes(_ value: JSONValue) -> [UInt8] {
        var out = [UInt8]()
        write(value, into: &out, indent: nil, level: 0)
        return out
    }

    /// The same content laid out for people: members sorted as in the canonical form, two-space
    /// indentation, a final newline. Re-canonicalizing it gives `canonicalBytes(value)`.
    public static func prettyBytes(_ value: JSONValue) -> [UInt8] {
        var out = [UInt8]()
        write(value, into: &out, indent: 2, level: 0)
        out.append(0x0A)
        return out
    }

    // MARK: serialization

    private static func write(_ value: JSONValue, into out: inout [UInt8], indent: Int?, level: Int) {
        switch value {
        case .null: out += Array("null".utf8)
        case .bool(let b): out += Array((b ? "true" : "false").utf8)
        case .number(let d): out += Array(ecmaScriptString(d).utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, indent, level + 1)
                write(item, into: &out, indent: indent, level: level + 1)
            }
            if !items.isEmpty { newline(&out, indent, level) }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            // RFC 8785 §3.2.3: member names sorted by their UTF-16 code units.
            let keys = members.keys.sorted { $0.utf16.lexicographicallyPrecedes($1.utf16) }
            for (i, key) in keys.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, indent, level + 1)
                writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(UInt8(ascii: " ")) }
                write(members[key]!, into: &out, indent: indent, level: level + 1)
            }
            if !keys.isEmpty { newline(&out, indent, level) }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func newline(_ out: inout [UInt8], _ indent: Int?, _ level: Int) {
        guard let indent else { return }
        out.append(0x0A)
        out += [UInt8](repeating: 0x20, count: indent * level)
    }

    /// RFC 8785 §3.2.2.2: only `"`, `\` and control characters are escaped, with the short
    /// forms where JSON has them and lowercase `\u00xx` otherwise.
    private static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x08: out += [0x5C, UInt8(ascii: "b")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x0C: out += [0x5C, UInt8(ascii: "f")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// ECMAScript's Number::toString (RFC 8785 §3.2.2.3) from the shortest round-trip digits,
    /// which Swift's `description` produces (closest of the shortest, as ECMAScript requires).
    public static func ecmaScriptString(_ value: Double) -> String {
        precondition(value.isFinite, "JSON numbers are finite")
        if value == 0 { return "0" }                        // also -0
        let negative = value < 0
        var text = value.magnitude.description               // "1.5", "1e-07", "1.2345e+20", "100.0"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        var integerPart = text, fraction = ""
        if let dot = text.firstIndex(of: ".") {
            integerPart = String(text[..<dot])
            fraction = String(text[text.index(after: dot)...])
        }
        // value = 0.DIGITS × 10^n, with DIGITS free of leading and trailing zeros.
        var digits = Array(integerPart + fraction)
        var n = integerPart.count + exponent
        while digits.first == "0" { digits.removeFirst(); n -= 1 }
        while digits.last == "0" { digits.removeLast() }
        let k = digits.count
        let d = String(digits)
        var result: String
        if k <= n && n <= 21 {
            result = d + String(repeating: "0", count: n - k)
        } else if 0 < n && n <= 21 {
            result = String(digits[0..<n]) + "." + String(digits[n...])
        } else if -6 < n && n <= 0 {
            result = "0." + String(repeating: "0", count: -n) + d
        } else {
            let e = n - 1
            let mantissa = k == 1 ? d : String(digits[0]) + "." + String(digits[1...])
            result = mantissa + "e" + (e < 0 ? "-" : "+") + String(abs(e))
        }
        return negative ? "-" + result : result
    }

    // MARK: parsing

    private struct Parser {
        let bytes: [UInt8]
        var position = 0
        var depth = 0

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        mutating func document() throws -> JSONValue {
            if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }   // a UTF-8 BOM some editors add
            skipWhitespace()
            let value = try self.value()
            skipWhitespace()
            guard position == bytes.count else { throw failure("unexpected content after the JSON value") }
            return value
        }

        func failure(_ what: String) -> JSONSyntaxError {
            // Line and column help the user find it; the content itself is not echoed.
            var line = 1, column = 1
            for b in bytes.prefix(position) {
                if b == 0x0A { line += 1; column = 1 } else { column += 1 }
            }
            return JSONSyntaxError(line: line, column: column, reason: what)
        }

        mutating func skipWhitespace() {
            while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
        }

        mutating func value() throws -> JSONValue {
            guard position < bytes.count else { throw failure("unexpected end of input") }
            switch bytes[position] {
            case UInt8(ascii: "{"): return try object()
            case UInt8(ascii: "["): return try array()
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            default: return .number(try number())
            }
        }

        mutating func literal(_ word: String) throws {
            let w = Array(word.utf8)
            guard bytes.count - position >= w.count, Array(bytes[position..<position + w.count]) == w else {
                throw failure("unexpected character")
            }
            position += w.count
        }

        mutating func nest() throws {
            depth += 1
            guard depth <= 256 else { throw failure("nested more than 256 levels deep") }
        }

        mutating func object() throws -> JSONValue {
            try nest()
            defer { depth -= 1 }
            position += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else { throw failure("expected a member name in quotes") }
                let name = try string()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw failure("expected ':' after a member name") }
                position += 1
                skipWhitespace()
                let item = try value()
                guard members.updateValue(item, forKey: name) == nil else {
                    throw failure("duplicate member name \"\(name)\" (a signed document must be unambiguous)")
                }
                skipWhitespace()
                guard position < bytes.count else { throw failure("unexpected end of input in an object") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw failure("expected ',' or '}' in an object")
            }
        }

        mutating func array() throws -> JSONValue {
            try nest()
            defer { depth -= 1 }
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try value())
                skipWhitespace()
                guard position < bytes.count else { throw failure("unexpected end of input in an array") }
                if bytes[position] == UInt8(ascii: ",") { position += 1; continue }
                if bytes[position] == UInt8(ascii: "]") { position += 1; return .array(items) }
                throw failure("expected ',' or ']' in an array")
            }
        }

        mutating func number() throws -> Double {
            let start = position
            func digits() -> Int {
                let s = position
                while position < bytes.count, (0x30...0x39).contains(bytes[position]) { position += 1 }
                return position - s
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
            guard position < bytes.count, (0x30...0x39).contains(bytes[position]) else { throw failure("unexpected character") }
            if bytes[position] == 0x30 { position += 1 } else { _ = digits() }
            if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw failure("expected digits after '.'") }
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
                position += 1
                if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw failure("expected digits in the exponent") }
            }
            let text = String(decoding: bytes[start..<position], as: UTF8.self)
            guard let value = Double(text), value.isFinite else {
                throw failure("the number \(text) is outside the range of IEEE-754 doubles")
            }
            return value
        }

        mutating func string() throws -> String {
            position += 1
            var run = position   // start of bytes copied as they are
            var out = [UInt8]()
            while true {
                guard position < bytes.count else { throw failure("unterminated string") }
                let b = bytes[position]
                if b == UInt8(ascii: "\"") { break }
                if b < 0x20 { throw failure("control character in a string (must be escaped)") }
                if b != UInt8(ascii: "\\") { position += 1; continue }
                out += bytes[run..<position]
                position += 1
                guard position < bytes.count else { throw failure("unterminated escape") }
                let e = bytes[position]
                position += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var code = try hex4()
                    if (0xD800...0xDBFF).contains(code) {
                        guard bytes.count - position >= 6, bytes[position] == 0x5C, bytes[position + 1] == UInt8(ascii: "u") else {
                            throw failure("lone UTF-16 surrogate in a string")
                        }
                        position += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw failure("lone UTF-16 surrogate in a string") }
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(code) {
                        throw failure("lone UTF-16 surrogate in a string")
                    }
                    out += Array(String(Character(Unicode.Scalar(code)!)).utf8)
                default:
                    throw failure("unknown escape '\\\(Character(Unicode.Scalar(e)))'")
                }
                run = position
            }
            out += bytes[run..<position]
            position += 1
            // Invalid UTF-8 is refused rather than repaired: a signature must cover exact text.
            guard let text = String(validating: out, as: UTF8.self) else { throw failure("invalid UTF-8 in a string") }
            return text
        }

        mutating func hex4() throws -> UInt32 {
            guard bytes.count - position >= 4 else { throw failure("short \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[position]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: throw failure("bad hex digit in a \\u escape")
                }
                v = v << 4 | d
                position += 1
            }
            return v
        }
    }
}
