import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The text fields of a small XML answer (S3, EC2) as `path → text` pairs in document order,
/// where the path joins element names from the root: `DescribeSnapshotsResponse/snapshotSet/item/status`.
/// Enough for the few fields we read; no DTDs or external entities are resolved.
struct XMLFields {
    private(set) var fields: [(path: String, text: String)] = []

    /// Nil when `bytes` is not well-formed XML.
    init?(_ bytes: [UInt8]) {
        let parser = XMLParser(data: Data(bytes))
        parser.shouldResolveExternalEntities = false
        let collector = Collector()
        parser.delegate = collector
        guard parser.parse() else { return nil }
        fields = collector.fields
    }

    /// The first text at `path`.
    func first(_ path: String) -> String? { fields.first { $0.path == path }?.text }

    /// Every text at `path`, in order.
    func all(_ path: String) -> [String] { fields.filter { $0.path == path }.map(\.text) }

    /// The first text of a direct child of the root called `name`, whatever the root is called
    /// (moto names some S3 roots `…Response` where S3 says `…Result`).
    func child(_ name: String) -> String? {
        fields.first { $0.path.split(separator: "/").count == 2 && $0.path.hasSuffix("/" + name) }?.text
    }

    /// The root element's name.
    var root: String? { fields.first.map { String($0.path.prefix { $0 != "/" }) } }

    private final class Collector: NSObject, XMLParserDelegate {
        var fields: [(path: String, text: String)] = []
        private var stack: [String] = []
        private var text = ""

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            stack.append(elementName)
            if stack.count == 1 { fields.append((elementName, "")) }   // records the root
            text = ""
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?) {
            let path = stack.joined(separator: "/")
            if stack.count > 1 { fields.append((path, text.trimmingCharacters(in: .whitespacesAndNewlines))) }
            if !stack.isEmpty { stack.removeLast() }
            text = ""
        }
    }
}

/// Escapes text for an XML element body.
func xmlEscaped(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&apos;"
        default: out.append(c)
        }
    }
    return out
}
