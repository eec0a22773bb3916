import ClusterRuntime
import Distributed
import Synchronization
import Testing
import Wire
import Workers

/// The REMOTE_CALL a call on a role pool becomes, made by the real actor system (the target is the
/// distributed function's mangled name) and captured before it is sent: for tests that play the
/// coordinator with a bare socket.
enum PoolCalls {
    /// A router that keeps the call and sends nothing.
    final class Capture: CallRouter {
        let call = Mutex<OutgoingCall?>(nil)
        struct NotSent: Error {}

        func route(_ call: OutgoingCall) async throws -> WirePayload {
            self.call.withLock { $0 = call }
            throw NotSent()
        }
    }

    /// The REMOTE_CALL (request id `requestID`) that `body` makes on the pools of a scratch actor system.
    static func message(requestID: UInt64, _ body: @Sendable (ClusterActorSystem) async throws -> Void) async throws -> WireMessage {
        let system = try ClusterActorSystem(bind: nil)
        defer { system.shutdown() }
        let capture = Capture()
        system.route(pools: capture)
        try? await body(system)
        let call = try #require(capture.call.withLock { $0 })
        return try ClusterActorSystem.callMessage(actor: try #require(call.actor.poolRole).rawValue, target: call.target,
                                                  arguments: call.arguments, timeoutMilliseconds: 0, requestID: requestID)
    }

    static func generate(_ request: GenerateRequest, requestID: UInt64) async throws -> WireMessage {
        try await message(requestID: requestID) { _ = try await Generator.resolve(id: .pool(.generator), using: $0).generate(request) }
    }

    /// A call of the right actor for `role` with a plain request of its kind about `sequence`.
    static func valid(role: WorkerRole, sequence: TokenSequence, requestID: UInt64) async throws -> WireMessage {
        switch role {
        case .generator:
            return try await generate(GenerateRequest(prompts: [GenerateRequest.Prompt(id: 0, tokens: sequence.prompt)], maxNewTokens: 4),
                                      requestID: requestID)
        case .rewardModel:
            return try await message(requestID: requestID) {
                _ = try await RewardModel.resolve(id: .pool(.rewardModel), using: $0).score(ScoreRequest(sequences: [sequence], model: .rewardModel))
            }
        case .safetyModel:
            return try await message(requestID: requestID) {
                _ = try await SafetyModel.resolve(id: .pool(.safetyModel), using: $0).score(ScoreRequest(sequences: [sequence], model: .safetyModel))
            }
        case .referencePolicy:
            return try await message(requestID: requestID) {
                _ = try await ReferencePolicy.resolve(id: .pool(.referencePolicy), using: $0)
                    .logProbs(LogProbRequest(sequences: [sequence], policyVersion: 0))
            }
        case .rewardFunction:
            let item = RewardItem(promptID: sequence.id, sampleID: 0, prompt: "Tell me a happy story about a dog.", response: "A dog.")
            return try await message(requestID: requestID) {
                _ = try await RewardFunction.resolve(id: .pool(.rewardFunction), using: $0).reward(RewardRequest(items: [item]))
            }
        case .learner:
            var batch = TrainBatch(kind: .sft)
            batch.sequences = [sequence]
            batch.learningRate = 1e-3
            return try await message(requestID: requestID) { [batch] in
                _ = try await Learner.resolve(id: .pool(.learner), using: $0).train(batch)
            }
        }
    }
}


