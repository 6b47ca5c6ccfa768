#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Progress of a long operation: bytes done of a total, rate and ETA.
///
/// On a terminal it redraws one line on stderr at most five times a second; when stderr is
/// not a terminal (scripts, CI) it prints nothing — unless asked for JSON lines (`--json`):
/// then one object a second on stderr, `{"event":"progress","label":…,"done":…,"total":…,
/// "bytes_per_second":…,"eta_seconds":…}`, and one when done, while stdout keeps the result.
public final class ProgressReporter: @unchecked Sendable {
    private let label: String
    private let total: UInt64
    private let enabled: Bool
    private let jsonLines: Bool
    private let start: Double
    private var lastDraw: Double = 0
    private var drewSomething = false
    private var reportedDone = false

    public init(label: String, total: UInt64, enabled: Bool = ProgressReporter.stderrIsTerminal) {
        self.label = label
        self.total = total
        self.enabled = enabled
        self.jsonLines = false
        self.start = ProgressReporter.now()
    }

    /// Progress as JSON lines on stderr (for `--json`), whatever stderr is.
    public init(jsonLinesLabel label: String, total: UInt64) {
        self.label = label
        self.total = total
        self.enabled = true
        self.jsonLines = true
        self.start = ProgressReporter.now()
    }

    public static var stderrIsTerminal: Bool { isatty(2) == 1 }

    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Reports that `done` of `total` bytes are processed.
    public func update(_ done: UInt64) {
        guard enabled else { return }
        let t = ProgressReporter.now()
        if jsonLines { return writeJSONLine(done, at: t) }
        guard t - lastDraw >= 0.2 || done >= total else { return }
        lastDraw = t
        let elapsed = max(t - start, 1e-6)
        let rate = Double(done) / elapsed
        var line = "\(label): \(formatBytes(done)) / \(formatBytes(total))  \(formatBytes(UInt64(rate)))/s"
        if rate > 0, done < total {
            line += "  ETA \(formatDuration(Double(total - done) / rate))"
        }
        let text = "\r\u{1B}[2K" + line
        _ = text.withCString { write(2, $0, strlen($0)) }
        drewSomething = true
    }

    private func writeJSONLine(_ done: UInt64, at t: Double) {
        guard !reportedDone, t - lastDraw >= 1 || done >= total else { return }
        lastDraw = t
        reportedDone = done >= total
        let elapsed = max(t - start, 1e-6)
        let rate = Double(done) / elapsed
        var line = "{\"event\":\"progress\",\"label\":\(jsonQuoted(label)),\"done\":\(done),\"total\":\(total),\"bytes_per_second\":\(UInt64(rate))"
        if rate > 0, done < total { line += ",\"eta_seconds\":\(Int((Double(total - done) / rate).rounded()))" }
        line += "}\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    private func jsonQuoted(_ text: String) -> String {
        String(decoding: CanonicalJSON.canonicalBytes(.string(text)), as: UTF8.self)
    }

    /// Ends the progress line.
    public func finish() {
        guard enabled, !jsonLines, drewSomething else { return }
        _ = "\n".withCString { write(2, $0, 1) }
    }
}

/// `1.5 GiB`, `730.0 MiB`, `512 B`.
public func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var i = 0
    while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    if i == 0 { return "\(n) B" }
    let tenths = (v * 10).rounded() / 10
    return "\(tenths) \(units[i])"
}

/// `0:42`, `1:02:03`.
public func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    let h = s / 3600, m = (s % 3600) / 60, sec = s % 60
    func two(_ x: Int) -> String { x < 10 ? "0\(x)" : "\(x)" }
    return h > 0 ? "\(h):\(two(m)):\(two(sec))" : "\(m):\(two(sec))"
}
