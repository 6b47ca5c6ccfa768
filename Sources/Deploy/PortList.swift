import CVMSupport
import Foundation

/// A port or an inclusive range of ports, 1–65535.
public struct PortRange: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public let from: UInt16
    public let to: UInt16

    public init(_ from: UInt16, _ to: UInt16? = nil) {
        self.from = from
        self.to = to ?? from
    }

    public var description: String { from == to ? "\(from)" : "\(from)-\(to)" }

    /// Parses `--additional_ports`: comma-separated ports or `low-high` ranges, spaces allowed,
    /// e.g. "80,443, 9000-9010". Empty text means none. Repeats are dropped, order is kept.
    public static func parseList(_ text: String, flag: String = "--additional_ports") throws -> [PortRange] {
        var out: [PortRange] = []
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        if items.allSatisfy(\.isEmpty) { return [] }
        for item in items {
            guard !item.isEmpty else {
                throw CVMError.usage("\(flag) '\(text)': an empty entry between commas; expected ports or ranges such as 80,443,9000-9010")
            }
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
            guard bounds.count <= 2 else {
                throw CVMError.usage("\(flag): '\(item)' is not a port or a range; expected e.g. 443 or 9000-9010")
            }
            let low = try port(bounds[0], item: item, flag: flag)
            let high = bounds.count == 2 ? try port(bounds[1], item: item, flag: flag) : low
            guard low <= high else {
                throw CVMError.usage("\(flag): range '\(item)' goes down; expected low-high such as \(high)-\(low)")
            }
            let r = PortRange(low, high)
            if !out.contains(r) { out.append(r) }
        }
        return out
    }

    private static func port(_ s: String, item: String, flag: String) throws -> UInt16 {
        guard !s.isEmpty, s.count <= 5, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(s), (1...65535).contains(n) else {
            throw CVMError.usage("\(flag): '\(item)' is not a valid port; ports are whole numbers from 1 to 65535")
        }
        return UInt16(n)
    }
}

