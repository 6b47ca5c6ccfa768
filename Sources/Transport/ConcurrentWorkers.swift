import Foundation

/// Runs `body(0..<count)` on up to `threads` dedicated threads (transfers block on the network,
/// so this is not limited to the core count like `parallelFor`). The first error is rethrown.
public func runConcurrently(_ count: Int, threads: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
    if count <= 0 { return }
    let workers = max(1, min(threads, count))
    let queue = WorkQueue(count: count)
    let done = DispatchGroup()
    for _ in 0..<workers {
        done.enter()
        let thread = Thread {
            while let i = queue.next() {
                do { try body(i) } catch { queue.fail(error) }
            }
            done.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    done.wait()
    if let e = queue.error { throw e }
}

private final class WorkQueue: @unchecked Sendable {
    private let lock = NSLock()
    private let count: Int
    private var nextIndex = 0
    private(set) var error: Error?

    init(count: Int) { self.count = count }

    func next() -> Int? {
        lock.withLock {
            guard error == nil, nextIndex < count else { return nil }
            defer { nextIndex += 1 }
            return nextIndex
        }
    }

    func fail(_ e: Error) { lock.withLock { if error == nil { error = e } } }
}
