import Foundation
import Synchronization
import Testing
@testable import LlamaCore

@Suite struct ComputePoolTests {
    @Test(arguments: [1, 2, 4])
    func parallelForCoversEveryIndexOnce(threads: Int) {
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        for count in [0, 1, 7, 64, 1000] {
            let hits = FloatBuffer(count: max(count, 1))
            for _ in 0..<20 {
                pool.parallelFor(count) { range, _ in
                    for i in range { hits.baseAddress[i] += 1 }
                }
            }
            #expect(hits.array(0..<count).allSatisfy { $0 == 20 }, "count \(count)")
        }
    }

    @Test func sharesAreContiguousAndAligned() {
        for threads in 1...5 {
            var covered = 0
            for t in 0..<threads {
                let r = ComputePool.share(of: 1000, thread: t, threads: threads, grain: 16)
                #expect(r.lowerBound == covered)
                #expect(r.lowerBound % 16 == 0)
                covered = r.upperBound
            }
            #expect(covered == 1000)
        }
    }

    @Test func regionsRightAfterCreationDoNotDeadlock() {
        // A helper thread that starts after the first region was issued must still join it.
        for _ in 0..<50 {
            let pool = ComputePool(threads: 3)
            let count = Atomic<Int>(0)
            pool.run { _ in count.add(1, ordering: .relaxed) }
            #expect(count.load(ordering: .relaxed) == 3)
            pool.shutdown()
        }
    }
}
