import CVMSupport
import CVMTestData
import Foundation
import XCTest

/// RFC 8785 canonical JSON, refereed by the `rfc8785` Python package (Trail of Bits), an
/// independent implementation of the same RFC.
final class CanonicalJSONTests: XCTestCase {
    /// Numbers: ECMAScript formatting of shortest round-trip digits, over edge cases and
    /// 3,000 pseudo-random doubles of every magnitude.
    func testNumbersMatchTheReferenceImplementation() throws {
        var values: [Double] = [0, -0.0, 1, -1, 0.1, 0.5, 1e21, 1e20, 123456789012345680000, 1e-6, 1e-7, 1.5e-7,
                                5e-324, .leastNormalMagnitude, .greatestFiniteMagnitude, 9007199254740991,
                                9007199254740992, 333333333.33333329, 1e23, 4.35, 0.000001, 1234.5678e-10, 2e-3]
        var state: UInt64 = 0x1234_5678_9ABC_DEF1
        for i in 0..<3000 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            var d = Double(bitPattern: state)
            if !d.isFinite { continue }
            if i % 3 == 0 { d = Double(Int64(bitPattern: state) % 1_000_000_000) / 1000 }   // everyday decimals
            values.append(d)
        }
        let input = "[" + values.map { $0.description }.joined(separator: ",") + "]"
        let ours = String(decoding: CanonicalJSON.canonicalBytes(try CanonicalJSON.parse(Array(input.utf8), source: "numbers")), as: UTF8.self)
        XCTAssertEqual(ours, try reference(input))
        XCTAssertEqual(CanonicalJSON.ecmaScriptString(1e21), "1e+21")
        XCTAssertEqual(CanonicalJSON.ecmaScriptString(1e-7), "1e-7")
        XCTAssertEqual(CanonicalJSON.ecmaScriptString(-0.0), "0")
        XCTAssertEqual(CanonicalJSON.ecmaScriptString(123456789012345680000), "123456789012345680000")
    }

    /// Strings and member order: UTF-16 key order (an astral character sorts before U+E000 in
    /// UTF-16 but after it by code point), escapes, `/` unescaped, nested structures.
    func testDocumentsMatchTheReferenceImplementation() throws {
        let documents = [
            #"{"b":1,"a":[true,false,null],"\u00e9":"caf\u00e9","\ud83d\ude00":"astral","\ue000":"private use","/":"a/b"}"#,
            #"{"ctl":"\u0000\u0001\b\t\n\f\r\u001f\"\\","deep":{"z":{"y":{"x":[1,[2,[3,{}]]]}}},"empty":"","arr":[]}"#,
            #"{ "pcrs" : { "sha256" : { "10" : "ab", "9" : "cd", "23" : "ef" } }, "version" : 1.0 , "tee": "none" }"#,
            #"[1E2, -0.0, 1e-7, 12.50, "€", "\u20ac", {"A":1,"a":2,"B":3}]"#,
        ]
        var all = documents
        // A pseudo-random tree of every kind of value.
        var seed: UInt64 = 7
        func next() -> UInt64 { seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17; return seed }
        func word() -> String {
            let alphabet = Array("aZ09_/\\\"é€😀\u{E000}\u{1F}\t ")
            return String((0..<Int(next() % 8)).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] })
        }
        func tree(_ depth: Int) -> String {
            switch next() % (depth > 4 ? 4 : 6) {
            case 0: return Double(bitPattern: next() & 0x7FEF_FFFF_FFFF_FFFF).description
            case 1: return ["true", "false", "null"][Int(next() % 3)]
            case 2, 3: return jsonQuoted(word())
            case 4: return "[" + (0..<Int(next() % 4)).map { _ in tree(depth + 1) }.joined(separator: ",") + "]"
            default:
                var keys = Set<String>()
                for _ in 0..<Int(next() % 5) { keys.insert(word()) }
                return "{" + keys.map { jsonQuoted($0) + ":" + tree(depth + 1) }.joined(separator: ",") + "}"
            }
        }
        for _ in 0..<200 {
            all.append("{" + (0..<6).map { "\"k\($0)\":" + tree(0) }.joined(separator: ",") + "}")
        }
        let expected = try references(all)
        XCTAssertEqual(expected.count, all.count)
        for (doc, reference) in zip(all, expected) {
            let ours = String(decoding: CanonicalJSON.canonicalBytes(try CanonicalJSON.parse(Array(doc.utf8), source: "doc")), as: UTF8.self)
            XCTAssertEqual(ours, reference, doc)
        }
    }

    func testPrettyFormReCanonicalizesToTheSameBytes() throws {
        let doc = #"{"b":[1,{"c":"\u00e9/"}],"a":1e21}"#
        let value = try CanonicalJSON.parse(Array(doc.utf8), source: "doc")
        let pretty = CanonicalJSON.prettyBytes(value)
        XCTAssertTrue(String(decoding: pretty, as: UTF8.self).contains("\n  \"a\": 1e+21"))
        XCTAssertEqual(CanonicalJSON.canonicalBytes(try CanonicalJSON.parse(pretty, source: "pretty")), CanonicalJSON.canonicalBytes(value))
    }

    func testMalformedJSONIsRefusedWithItsPosition() {
        let cases: [(String, String)] = [
            (#"{"a":1,"a":2}"#, "duplicate member name"),
            (#"{"a":"\ud800"}"#, "lone UTF-16 surrogate"),
            (#"{"a":"\udc00x"}"#, "lone UTF-16 surrogate"),
            (#"[1,]"#, "unexpected character"),
            (#"{"a":NaN}"#, "unexpected character"),
            (#"[01]"#, "expected ',' or ']'"),
            (#"[1e400]"#, "outside the range"),
            (#"{"a":1} x"#, "unexpected content after"),
            ("{\"a\":\"tab\there\"}", "control character"),
            (#"{"a":"x"#, "unterminated string"),
            (String(repeating: "[", count: 300) + String(repeating: "]", count: 300), "nested more than 256"),
            ("", "unexpected end of input"),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try CanonicalJSON.parse(Array(text.utf8), source: "bad.json"), text) { error in
                let message = (error as? CVMError)?.message ?? "\(error)"
                XCTAssertTrue(message.hasPrefix("bad.json: not valid JSON at line 1, column "), message)
                XCTAssertTrue(message.contains(reason), "\(text): \(message)")
            }
        }
        XCTAssertThrowsError(try CanonicalJSON.parse([0x22, 0xFF, 0x22], source: "bad.json"))
    }

    // MARK: helpers

    private func jsonQuoted(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// The canonical forms of documents (one per line) according to the `rfc8785` package.
    private func references(_ documents: [String]) throws -> [String] {
        let script = """
        import json, sys, rfc8785
        for line in sys.stdin.buffer.read().split(b"\\n"):
            sys.stdout.buffer.write(rfc8785.dumps(json.loads(line)).hex().encode() + b"\\n")
        """
        let r = try TestProcess.run("python3", ["-c", script], stdin: Data(documents.joined(separator: "\n").utf8))
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout.split(separator: "\n").map { hex in
            var bytes = [UInt8]()
            var it = hex.makeIterator()
            while let a = it.next(), let b = it.next() { bytes.append(UInt8(String([a, b]), radix: 16)!) }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// The canonical form according to the `rfc8785` package.
    private func reference(_ json: String) throws -> String {
        let script = "import json, sys, rfc8785; sys.stdout.buffer.write(rfc8785.dumps(json.loads(sys.stdin.buffer.read())))"
        let r = try TestProcess.run("python3", ["-c", script], stdin: Data(json.utf8))
        guard r.status == 0 else {
            XCTFail("rfc8785 reference failed: \(r.stderr)")
            return ""
        }
        return r.stdout
    }
}
