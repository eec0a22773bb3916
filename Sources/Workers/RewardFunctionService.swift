import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import Synchronization
import Wire

/// The compute of the reward-function role: an external command spoken to in JSON lines. Each answer
/// is one line on its stdin, `{"prompt", "response", "prompt_id", "sample_id", ...the prompt record's other
/// fields}`, and the command writes `{"reward": number}` per line, in order. A command that crashes,
/// answers anything but a finite number, or takes longer than its timeout fails the call with its stderr
/// (the coordinator's step then fails, or, for a dead worker, the call goes to another worker); a reward
/// is never made up. `RewardFunction` is its distributed actor.
public final class RewardFunctionService: RoleService, Sendable {
    public let command: JSONLineCommand
    private let answered = Atomic<UInt64>(0)

    /// A reward function running `arguments` in `directory`, each batch within `timeoutSeconds`.
    public init(arguments: [String], directory: String? = nil, timeoutSeconds: Double = 600) throws {
        guard !arguments.isEmpty else { throw LlamaError.invalidInput("a reward function needs a command") }
        command = JSONLineCommand(arguments: arguments, timeoutSeconds: timeoutSeconds, directory: directory)
    }

    public var policyVersion: UInt64 { 0 }
    public var weightsChecksum: UInt32 { 0 }
    /// Answers scored so far.
    public var tokensProcessed: UInt64 { answered.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { nil }

    /// One reward per item of `request`, in order.
    public func reward(_ request: RewardRequest) throws -> FunctionRewards {
        guard !request.items.isEmpty else { throw LlamaError.invalidInput("the request has no answers") }
        let lines = try request.items.map { item -> [String: Any] in
            var record: [String: Any] = [:]
            if let fields = try? JSONSerialization.jsonObject(with: Data(item.fieldsJSON.utf8)) as? [String: Any] { record = fields }
            record["prompt"] = item.prompt
            record["response"] = item.response
            record["prompt_id"] = item.promptID
            record["sample_id"] = item.sampleID
            guard JSONSerialization.isValidJSONObject(record) else { throw LlamaError.invalidInput("answer \(item.promptID)/\(item.sampleID): fields are not JSON") }
            return record
        }
        let answers = try command.call(lines)
        let values = try answers.enumerated().map { i, answer -> Float in
            guard let value = answer["reward"] as? NSNumber, String(cString: value.objCType) != "c",
                  let reward = Double(value.stringValue), reward.isFinite, Float(reward).isFinite else {
                throw JSONLineCommand.Failure(description: "\(command.commandLine): answer \(i + 1) of \(lines.count) has no finite \"reward\" number: "
                                              + "\(answer)")
            }
            return Float(reward)
        }
        answered.add(UInt64(values.count), ordering: .relaxed)
        return FunctionRewards(values: values)
    }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        let actor = RewardFunction(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }
}
