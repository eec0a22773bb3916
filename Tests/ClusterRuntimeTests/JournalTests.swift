import ClusterRuntime
import Foundation
import Testing
import TestKit

/// The coordinator's run journal, read back after clean and torn endings.
@Suite struct JournalTests {
    static func path() -> String { TestKit.scratch("journal") + ".jsonl" }

    @Test func recordsAreReadBackAndFinishedStepsDropTheirResults() throws {
        let path = JournalTests.path()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let (journal, recovered) = try RunJournal.open(at: path)
            #expect(recovered.specDigest == nil && recovered.records == 0)
            try journal.append(.run(specDigest: 42))
            try journal.append(.coordinator(endpoint: "tcp://127.0.0.1:5000"))
            try journal.append(.worker(id: "generator-a-0", host: "a", pid: 123))
            try journal.append(.stepBegin(index: 0))
            try journal.append(.result(requestID: RunJournal.firstRequestID(ofStep: 0) + 1, frames: [Data([1, 2, 3])]))
            try journal.append(.stepDone(index: 0, policyVersion: 1, round: 1, announces: ["generator": Data([9])]))
            try journal.append(.stepBegin(index: 1))
            try journal.append(.result(requestID: RunJournal.firstRequestID(ofStep: 1) + 1, frames: [Data([4]), Data()]))
            try journal.append(.result(requestID: RunJournal.firstRequestID(ofStep: 1) + 2, frames: [Data([5])]))
        }
        let (_, recovered) = try RunJournal.open(at: path)
        #expect(recovered.records == 9)
        #expect(recovered.specDigest == 42)
        #expect(recovered.endpoint == "tcp://127.0.0.1:5000")
        #expect(recovered.workers["generator-a-0"]?.pid == 123)
        #expect(recovered.lastDoneStep == 0)
        #expect(recovered.doneSteps[0]?.policyVersion == 1 && recovered.doneSteps[0]?.announces == ["generator": Data([9])])
        // Only the results of the step in progress are kept, byte for byte.
        #expect(recovered.results.keys.sorted() == [RunJournal.firstRequestID(ofStep: 1) + 1, RunJournal.firstRequestID(ofStep: 1) + 2])
        #expect(recovered.results[RunJournal.firstRequestID(ofStep: 1) + 1] == [Data([4]), Data()])
        #expect(!recovered.finished && !recovered.cutTornTail)
    }

    @Test func aTornLastRecordIsCutOffAndAppendsGoOnCleanly() throws {
        let path = JournalTests.path()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let (journal, _) = try RunJournal.open(at: path)
            try journal.append(.run(specDigest: 7))
            try journal.append(.stepBegin(index: 0))
        }
        // A crash in the middle of a write leaves half a line.
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("{\"result\":{\"requestID\":4294967297,\"fra".utf8))
        try handle.close()
        do {
            let (journal, recovered) = try RunJournal.open(at: path)
            #expect(recovered.cutTornTail)
            #expect(recovered.records == 2 && recovered.results.isEmpty)
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == whole)
            try journal.append(.finished)
        }
        let (_, recovered) = try RunJournal.open(at: path)
        #expect(recovered.finished && !recovered.cutTornTail && recovered.records == 3)
    }

    @Test func aDamagedRecordBeforeTheLastIsRefusedWithItsLine() throws {
        let path = JournalTests.path()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let (journal, _) = try RunJournal.open(at: path)
            try journal.append(.run(specDigest: 7))
            try journal.append(.stepBegin(index: 0))
            try journal.append(.stepBegin(index: 1))
        }
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let secondLine = bytes.firstIndex(of: UInt8(ascii: "\n"))! + 1
        bytes[secondLine + 3] ^= 0x01 // one bit flipped in line 2
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try RunJournal.open(at: path)
            Issue.record("a damaged journal was read")
        } catch let e as RunJournal.Corrupt {
            #expect(e.line == 2)
            #expect(e.description.contains("checksum mismatch"), "\(e)")
        }
    }
}
