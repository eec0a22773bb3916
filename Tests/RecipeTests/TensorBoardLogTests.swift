import Foundation
import LlamaCore
@testable import Recipe
import Testing
import TestKit

/// The run's metrics as TensorBoard scalars: which numbers of a record become which tags at which step, the
/// TFRecord framing (TensorFlow's masked CRC-32C), and the event file a reader parses back.
@Suite struct TensorBoardLogTests {
    @Test func aRecordsNumbersBecomeTaggedScalarsAtItsStep() {
        let ppo: [String: Any] = ["stage": "ppo", "round": "V5", "iteration": 3, "policy_version": 1397, "reward_mean": 8.5,
                                  "kl_mean": Float(1.5), "gradient_steps": 8, "time": 1.0, "clipped": true, "note": NSNull()]
        #expect(TensorBoardLog.scalars(of: ppo, fallbackStep: 9) == [
            .init(tag: "ppo/gradient_steps", step: 1397, value: 8), .init(tag: "ppo/kl_mean", step: 1397, value: 1.5),
            .init(tag: "ppo/reward_mean", step: 1397, value: 8.5),
        ])
        // A reward model's records: tagged by the model, at its version; nested objects' numbers under their path.
        let done: [String: Any] = ["stage": "train_rm_done", "model": "reward-model", "version": 2749, "held_out_accuracy": 0.875,
                                   "levels": ["better": ["correct": 3, "total": 4]]]
        #expect(TensorBoardLog.scalars(of: done, fallbackStep: 1) == [
            .init(tag: "train_rm_done/reward-model/held_out_accuracy", step: 2749, value: 0.875),
            .init(tag: "train_rm_done/reward-model/levels/better/correct", step: 2749, value: 3),
            .init(tag: "train_rm_done/reward-model/levels/better/total", step: 2749, value: 4),
        ])
        // No step of its own: the count given; no stage: nothing.
        #expect(TensorBoardLog.scalars(of: ["stage": "new_pairs", "round": "V1", "pairs": 512], fallbackStep: 2)
                == [.init(tag: "new_pairs/pairs", step: 2, value: 512)])
        #expect(TensorBoardLog.scalars(of: ["loss": 1.0], fallbackStep: 1).isEmpty)
    }

    /// TensorFlow's record framing: TensorBoard's own `RecordWriter` writes these bytes for b"hello".
    @Test func recordsAreFramedAsTensorFlowFramesThem() {
        let framed = TensorBoardLog.tfRecord(Array("hello".utf8))
        #expect(framed.count == 8 + 4 + 5 + 4)
        #expect(Array(framed[0..<8]) == [5, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(framed[12..<17]) == Array("hello".utf8))
        // The masked CRC-32C of the length and of the data, little-endian (tensorboard 2.21's
        // `tensorboard.summary.writer.record_writer.RecordWriter(io.BytesIO()).write(b"hello")`).
        #expect(Array(framed[8..<12]) == [0xEA, 0xB2, 0x04, 0x3E] && Array(framed[17..<21]) == [0xBB, 0x1F, 0x1C, 0x19], "\(framed)")
    }

    /// The file: the version event first, then one event per record with its scalars, each parsed back.
    @Test func theEventFileParsesBack() throws {
        let dir = TestKit.scratch("tensorboard")
        var log = try TensorBoardLog(directory: dir)
        try log.write(["stage": "sft", "policy_version": 4, "loss": 2.5, "time": 10.0], wallTime: 10)
        try log.write(["stage": "sft", "policy_version": 5, "loss": 2.0], wallTime: 11)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log.path)))
        var events: [Tensorboard_Event] = [], offset = 0
        while offset < bytes.count {
            let length = Int(bytes[offset..<offset + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            let data = Array(bytes[offset + 12..<offset + 12 + length])
            #expect(Array(TensorBoardLog.tfRecord(data)) == Array(bytes[offset..<offset + 16 + length]))
            events.append(try Tensorboard_Event(serializedBytes: data))
            offset += 16 + length
        }
        #expect(events.count == 3 && events[0].fileVersion == "brain.Event:2")
        #expect(events[1].step == 4 && events[1].wallTime == 10 && events[1].summary.value.map(\.tag) == ["sft/loss"])
        #expect(events[2].step == 5 && events[2].summary.value.first?.simpleValue == 2)
        #expect(log.path.hasPrefix(dir + "/events.out.tfevents."))
    }
}
