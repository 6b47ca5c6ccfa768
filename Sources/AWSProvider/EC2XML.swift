import CVMSupport
import CXML2
import Foundation

/// An element of an EC2 (or S3) XML answer, parsed with libxml2: name, own text and children.
/// Enough for the query API's answers; no DTDs, entities or network access.
public struct EC2XMLElement: Sendable, Equatable {
    public var name: String
    /// The concatenated text directly inside this element (trimmed).
    public var text: String
    public var children: [EC2XMLElement]

    /// Parses `bytes`; nil when they are not well-formed XML.
    public static func parse(_ bytes: [UInt8]) -> EC2XMLElement? {
        guard !bytes.isEmpty, bytes.count < Int(Int32.max) else { return nil }
        let options = Int32(XML_PARSE_NONET.rawValue | XML_PARSE_NOERROR.rawValue | XML_PARSE_NOWARNING.rawValue)
        let doc = bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                xmlReadMemory($0, Int32(buffer.count), "answer.xml", "UTF-8", options)
            }
        }
        guard let doc else { return nil }
        defer { xmlFreeDoc(doc) }
        guard let root = xmlDocGetRootElement(doc) else { return nil }
        return element(root)
    }

    private static func element(_ node: xmlNodePtr) -> EC2XMLElement {
        var out = EC2XMLElement(name: String(cString: node.pointee.name), text: "", children: [])
        var child = node.pointee.children
        while let c = child {
            switch c.pointee.type {
            case XML_ELEMENT_NODE:
                out.children.append(element(c))
            case XML_TEXT_NODE, XML_CDATA_SECTION_NODE:
                if let content = c.pointee.content { out.text += String(cString: content) }
            default:
                break
            }
            child = c.pointee.next
        }
        out.text = out.text.trimmingCharacters(in: .whitespacesAndNewlines)
        return out
    }

    /// The first child called `name`.
    public func child(_ name: String) -> EC2XMLElement? { children.first { $0.name == name } }

    /// The element at a `/`-separated path of child names (`instanceState/name`).
    public func at(_ path: String) -> EC2XMLElement? {
        var e: EC2XMLElement? = self
        for part in path.split(separator: "/") { e = e?.child(String(part)) }
        return e
    }

    /// The text at `path`, nil when absent.
    public func text(_ path: String) -> String? { at(path)?.text }

    /// The `<item>` children of the set at `path` (`reservationSet`, `instancesSet`).
    public func items(_ path: String) -> [EC2XMLElement] {
        at(path)?.children.filter { $0.name == "item" } ?? []
    }

    /// `tagSet` as a dictionary.
    public var tags: [String: String] {
        Dictionary(items("tagSet").compactMap { i in i.text("key").map { ($0, i.text("value") ?? "") } }, uniquingKeysWith: { a, _ in a })
    }
}
