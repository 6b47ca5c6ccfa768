import CVMSupport
import DiskImage
import Foundation

/// The answer of Get Page Ranges: `<PageList><PageRange><Start>0</Start><End>511</End>…`
/// (End inclusive), and the marker of the next slice when the service paged the list.
struct PageList: Equatable {
    var ranges: [Range<UInt64>]
    var nextMarker: String?

    init(ranges: [Range<UInt64>], nextMarker: String? = nil) {
        self.ranges = ranges
        self.nextMarker = nextMarker
    }

    init(xml text: String) throws {
        var ranges = [Range<UInt64>]()
        var rest = Substring(text)
        while let open = rest.range(of: "<PageRange>") {
            guard let close = rest.range(of: "</PageRange>", range: open.upperBound..<rest.endIndex) else { break }
            let item = rest[open.upperBound..<close.lowerBound]
            guard let start = Self.element("Start", in: item).flatMap(UInt64.init),
                  let end = Self.element("End", in: item).flatMap(UInt64.init), end >= start else {
                throw CVMError.io("Get Page Ranges: unreadable <PageRange> in the answer: \(String(item.prefix(200)))")
            }
            ranges.append(start..<(end + 1))
            rest = rest[close.upperBound...]
        }
        self.ranges = normalizeRanges(ranges)
        let marker = Self.element("NextMarker", in: Substring(text))
        nextMarker = (marker?.isEmpty ?? true) ? nil : marker
    }

    static func element(_ name: String, in text: Substring) -> String? {
        guard let open = text.range(of: "<\(name)>"),
              let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else { return nil }
        return text[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespaces)
    }
}

/// `range` minus the (normalized, ascending) `covered` ranges: what is left to send.
func subtracting(_ covered: [Range<UInt64>], from range: Range<UInt64>) -> [Range<UInt64>] {
    var out = [Range<UInt64>]()
    var start = range.lowerBound
    // First covered range ending after `start` (binary search: resume lists can be long).
    var lo = 0, hi = covered.count
    while lo < hi {
        let mid = (lo + hi) / 2
        if covered[mid].upperBound <= start { lo = mid + 1 } else { hi = mid }
    }
    for c in covered[lo...] {
        if c.lowerBound >= range.upperBound { break }
        if c.lowerBound > start { out.append(start..<c.lowerBound) }
        start = max(start, c.upperBound)
        if start >= range.upperBound { break }
    }
    if start < range.upperBound { out.append(start..<range.upperBound) }
    return out
}
