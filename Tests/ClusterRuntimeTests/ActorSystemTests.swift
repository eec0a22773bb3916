import ClusterRuntime
import Distributed
import Foundation
import Testing
import Wire

/// A test actor: echoes, fails on request, or takes its time.
distributed actor Echo {
    typealias ActorSystem = ClusterActorSystem

    struct Refused: Error, CustomStringConvertible {
        let reason: String
        var description: String { "refused: \(reason)" }
    }

    /// Values with tensors travel both ways: appends the count of values it got.
    distributed func echo(_ scores: Scores) -> Scores {
        var s = scores
        s.values.append(Float(s.values.count))
        return s
    }

    /// Two arguments, each with a tensor of its own.
    distributed func concatenate(_ a: Scores, _ b: Scores) -> Scores {
        Scores(model: b.model, modelVersion: a.modelVersion + b.modelVersion, values: a.values + b.values)
    }

    distributed func fail(_ error: Rlhf_V1_Heartbeat) throws -> Rlhf_V1_Heartbeat { throw Refused(reason: error.workerID) }

    distributed func slow(_ h: Rlhf_V1_Heartbeat) async -> Rlhf_V1_Heartbeat {
        try? await Task.sleep(for: .milliseconds(Int(h.tasksInFlight)))
        return h
    }
}

@Suite struct ActorSystemTests {
    @Test func callsRoundTripErrorsComeBackAndTimeoutsFire() async throws {
        let server = try ClusterActorSystem(bind: "tcp://127.0.0.1:*", buildHash: "build-a")
        defer { server.shutdown() }
        let local = Echo(actorSystem: server)
        let address = server.publish(local, as: "echo")
        let client = try ClusterActorSystem(bind: nil, buildHash: "build-a", callTimeoutMilliseconds: 20_000)
        defer { client.shutdown() }
        let remote = try Echo.resolve(id: address, using: client)
        let impatient = try ClusterActorSystem(bind: nil, buildHash: "build-a", callTimeoutMilliseconds: 300)
        defer { impatient.shutdown() }

        let scores = Scores(model: .safetyModel, modelVersion: 7, values: [1, 2])
        let answer = try await remote.echo(scores)
        #expect(answer == Scores(model: .safetyModel, modelVersion: 7, values: [1, 2, 2]))
        #expect(try await remote.concatenate(scores, Scores(model: .rewardModel, modelVersion: 1, values: [5]))
                == Scores(model: .rewardModel, modelVersion: 8, values: [1, 2, 5]))

        // A thrown error comes back with its text.
        var e = Rlhf_V1_Heartbeat()
        e.workerID = "no such prompt"
        await #expect(throws: RemoteCallError.self) { _ = try await remote.fail(e) }
        do {
            _ = try await remote.fail(e)
        } catch {
            #expect("\(error)".contains("refused: no such prompt"))
        }

        // Every call has a timeout.
        var h = Rlhf_V1_Heartbeat()
        h.tasksInFlight = 1_000
        do {
            _ = try await Echo.resolve(id: address, using: impatient).slow(h)
            Issue.record("a 1 s call returned within a 300 ms timeout")
        } catch let error as RemoteCallError {
            #expect(error == .timeout(target: error.timeoutTarget ?? "", milliseconds: 300))
        }
        h.tasksInFlight = 1
        #expect(try await remote.slow(h).tasksInFlight == 1)

        // An unknown name is answered, not ignored.
        let stranger = try Echo.resolve(id: ClusterActorID(endpoint: server.endpoint, name: "nobody"), using: client)
        do {
            _ = try await stranger.echo(scores)
            Issue.record("a call to an unregistered actor succeeded")
        } catch let RemoteCallError.remote(code, message) {
            #expect(code == .unknownActor)
            #expect(message.contains("nobody"))
        }
    }

    @Test func anotherBuildIsRefusedAtTheHandshake() async throws {
        let server = try ClusterActorSystem(bind: "tcp://127.0.0.1:*", buildHash: "build-a")
        defer { server.shutdown() }
        let address = server.publish(Echo(actorSystem: server), as: "echo")
        let client = try ClusterActorSystem(bind: nil, buildHash: "build-b", callTimeoutMilliseconds: 2_000)
        defer { client.shutdown() }
        let remote = try Echo.resolve(id: address, using: client)
        do {
            _ = try await remote.echo(Scores(model: .policy, modelVersion: 0, values: []))
            Issue.record("a peer of another build was served")
        } catch let RemoteCallError.remote(code, message) {
            #expect(code == .versionMismatch)
            #expect(message.contains("build-b") && message.contains("build-a"))
        }
    }

    @Test func theCoordinatorServesItsControlActorOnItsOwnPort() async throws {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.buildHash = "test-build"
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        coordinator.setProgress(PlanStage(.retrain, round: "V2", subject: "safety-model"), round: 3, step: 9)
        let client = try ClusterActorSystem(bind: nil, buildHash: "test-build")
        defer { client.shutdown() }
        let control = try CoordinatorControl.resolve(id: CoordinatorControl.address(at: coordinator.endpoint), using: client)
        let status = try await control.status()
        #expect(status.planStage == PlanStage(.retrain, round: "V2", subject: "safety-model"))
        #expect("\(status.planStage)" == "V2: retrain safety-model")
        #expect(status.round == 3 && status.step == 9)
        #expect(try await control.ping(Ping(sender: "probe")) == Ping(sender: "probe"))
    }

    /// A client whose connection is made anew under its socket (here: the coordinator restarted on the
    /// same endpoint, which knows no handshake of it) shakes hands again instead of failing every
    /// later call with "no handshake on this connection".
    @Test func aClientShakesHandsAgainWithARestartedPeer() async throws {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.buildHash = "test-build"
        let first = try Coordinator(settings: settings)
        let client = try ClusterActorSystem(bind: nil, buildHash: "test-build")
        defer { client.shutdown() }
        let control = try CoordinatorControl.resolve(id: CoordinatorControl.address(at: first.endpoint), using: client)
        #expect(try await control.ping(Ping(sender: "before")) == Ping(sender: "before"))
        first.shutdown()
        settings.bind = first.endpoint
        let second = try Coordinator(settings: settings)
        defer { second.shutdown() }
        second.setProgress(PlanStage(.retrain, round: "V2", subject: "safety-model"), round: 3, step: 9)
        #expect(try await control.status().step == 9)
    }
}

extension RemoteCallError {
    /// The target of a timeout (tests compare the rest).
    var timeoutTarget: String? {
        if case let .timeout(target, _) = self { return target }
        return nil
    }
}
