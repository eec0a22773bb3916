import ClusterRuntime
import Foundation
import Recipe
import Synchronization
import Testing
import TestKit
import Transport
import Wire
import Workers
import LlamaCore

/// Real processes: worker daemons started from the built `rlhf` join an in-process coordinator.
@Suite(.serialized) struct ClusterProcessTests {
    static var executable: URL { TestKit.executable }

    /// A generate request of one prompt (`prompt` ids), `samples` samples of exactly `tokens` tokens.
    static func request(prompt ids: [Int32], samples: Int, tokens: Int) -> GenerateRequest {
        GenerateRequest(prompts: [GenerateRequest.Prompt(id: 0, tokens: ids)], samplesPerPrompt: samples, maxNewTokens: tokens)
    }

    static func spawn(_ arguments: [String], environment: [String: String] = [:]) throws -> Process {
        try TestKit.spawn(arguments, environment: environment)
    }

    @Test func workersJoinAreWatchedAndReportedByStatus() throws {
        guard FileManager.default.isExecutableFile(atPath: ClusterProcessTests.executable.path) else {
            Issue.record("rlhf not built at \(ClusterProcessTests.executable.path)")
            return
        }
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 100
        // The workers run the rlhf binary, not this test runner: admit that build.
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let workers = try [("generator", "g-1"), ("generator", "g-2"), ("learner", "l-1")].map { role, id in
            try ClusterProcessTests.spawn(["worker", "--role", role, "--coordinator", coordinator.endpoint, "--id", id])
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == 3 })
        let roles = coordinator.workers().map { "\($0.registration.workerID):\($0.registration.role.rawValue)" }
        #expect(roles == ["g-1:generator", "g-2:generator", "l-1:learner"])

        // A worker that dies is noticed.
        kill(workers[1].processIdentifier, SIGKILL)
        #expect(TestKit.waitFor(10) { coordinator.workers().first { $0.registration.workerID == "g-2" }?.health == .dead })

        // Garbage gets an ERROR and the coordinator keeps serving.
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let replies = Mutex<[WireMessage]>([])
        let (socket, _) = try loop.open(.dealer, connect: [coordinator.endpoint]) { frames in
            if let m = try? WireMessage.decode(frames) { replies.withLock { $0.append(m) } }
        }
        loop.send(socket, [[0xDE, 0xAD], [1, 2, 3]])
        #expect(TestKit.waitFor(5) { replies.withLock { $0.first?.type == .error } })

        // rlhf status --json from another process.
        let out = TestKit.scratch("status") + ".json"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let status = Process()
        status.executableURL = ClusterProcessTests.executable
        status.arguments = ["status", "--coordinator", coordinator.endpoint, "--json"]
        status.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        let errors = out + ".err"
        _ = FileManager.default.createFile(atPath: errors, contents: nil)
        status.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
        try status.run()
        status.waitUntilExit()
        #expect(status.terminationStatus == 0, "\((try? String(contentsOfFile: errors, encoding: .utf8)) ?? "")")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out))) as! [String: Any]
        let listed = object["workers"] as! [[String: Any]]
        #expect(listed.count == 3)
        #expect(listed.contains { $0["id"] as? String == "g-2" && $0["state"] as? String == "dead" })
        #expect(listed.filter { $0["state"] as? String == "healthy" }.count == 2)
        #expect(listed.allSatisfy { $0["pid"] is Int && $0["host"] is String && $0["policy_version"] is Int && $0["role"] is String })
        // Started without --checkpoint: no model, shown as none (it showed weights 00000000 as if it had one).
        #expect(listed.allSatisfy { $0["weights_crc32c"] is NSNull }, "\(listed)")

        // SIGTERM makes the others leave.
        for w in workers where w.isRunning { w.terminate() }
        for w in workers { w.waitUntilExit() }
    }

    /// Fan-out of generate tasks over 3 generator processes: every sample exactly once, in prompt and
    /// sample order, equal to what the same requests give in this process.
    @Test func generateFanOutOverThreeGenerators() throws {
        let checkpoint = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../LlamaCoreTests/Resources/models/tiny-gqa.bin").standardized.path
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 100
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let workers = try (1...3).map { i in
            try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint,
                                           "--id", "gen-\(i)", "--checkpoint", checkpoint])
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == 3 })

        let prompts = (0..<6).map { (i: Int) -> GenerateRequest.Prompt in
            let tokens: [Int32] = [1, Int32(10 + i), Int32(20 + 3 * i)]
            return GenerateRequest.Prompt(id: UInt64(100 + i), tokens: tokens)
        }
        let request = GenerateRequest(prompts: prompts, samplesPerPrompt: 2, sampling: SamplingSettings(temperature: 1, topP: 1), seed: 77, maxNewTokens: 12)
        let samples = try coordinator.generate(request, promptsPerTask: 1, timeoutSeconds: 120)
        #expect(samples.map { "\($0.promptID)/\($0.index)" }
                == request.prompts.flatMap { p in ["\(p.id)/0", "\(p.id)/1"] })
        // The same task computed here gives the same tokens and log-probabilities.
        let local = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: checkpoint)))
        for (i, prompt) in request.prompts.enumerated() {
            var one = request
            one.prompts = [prompt]
            let expected = try local.generate(batch: GeneratorService.requests(for: one))
            for k in 0..<2 {
                #expect(samples[2 * i + k].tokens == expected[k].ids, "prompt \(prompt.id) sample \(k)")
                #expect(samples[2 * i + k].logProbs == expected[k].logProbs)
            }
        }
        for w in workers where w.isRunning { w.terminate() }
        for w in workers { w.waitUntilExit() }
    }
}

/// Weight sync, drain and metrics with real worker processes of every role.
@Suite(.serialized) struct RoleProcessTests {
    static let checkpoint = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../LlamaCoreTests/Resources/models/tiny-gqa.bin").standardized.path

    static func coordinator(metrics: Bool = false) throws -> Coordinator {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 100
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        if metrics { settings.metricsBind = "tcp://127.0.0.1:*" }
        return try Coordinator(settings: settings)
    }

    @Test func weightSyncAfterALearnerStep() throws {
        let coordinator = try RoleProcessTests.coordinator()
        defer { coordinator.shutdown() }
        let roles = [("learner", "learner-0"), ("generator", "gen-0"), ("generator", "gen-1"), ("reference-policy", "ref-0"),
                     ("reward-model", "rm-0")]
        // The step is taken again in this process below and must give the same bits, so the workers run
        // this process's OpenBLAS kernels: the rlhf executable would switch a generic core (Prescott, as
        // OpenBLAS detects the Intel Xeons of the class) to the CPU's own at start-up, this test runner
        // cannot, and the two kernel sets sum in different orders.
        let workers = try roles.map { role, id in
            try ClusterProcessTests.spawn(["worker", "--role", role, "--coordinator", coordinator.endpoint, "--id", id,
                                           "--checkpoint", RoleProcessTests.checkpoint],
                                          environment: [BLASKernelPolicy.overrideVariable: BLASRuntime.coreName])
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == roles.count })
        let initial = try Checkpoint.read(path: RoleProcessTests.checkpoint).weights.checksum
        // Heartbeats report what each worker holds: the checkpoint, version 0.
        #expect(TestKit.waitFor(10) { coordinator.workers().allSatisfy { $0.weightsChecksum == initial && $0.policyVersion == 0 } })

        var batch = TrainBatch(kind: .sft)
        batch.sequences = (0..<3).map { (i: Int) -> TokenSequence in
            let prompt: [Int32] = [1, Int32(20 + i)], response: [Int32] = [Int32(40 + i), Int32(41 + i), 2]
            return TokenSequence(id: UInt64(i), prompt: prompt, response: response)
        }
        batch.learningRate = 1e-3
        let stats = try coordinator.train(batch)
        #expect(stats.policyVersion == 1)
        let synced = try coordinator.syncWeights(stats.announce, roles: [.generator, .referencePolicy])
        #expect(Set(synced) == ["gen-0", "gen-1", "ref-0"])

        // The same step taken here gives the same weights: every consumer holds exactly them.
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let local = try LearnerService(weights: try Checkpoint.read(path: RoleProcessTests.checkpoint).weights, serving: WeightServing(loop: loop,
                                bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        _ = try local.train(batch)
        #expect(local.weightsChecksum == stats.announce?.modelChecksum)
        #expect(local.weightsChecksum != initial)
        // The consumers confirmed before syncWeights returned; the learner says so at its next heartbeat.
        let holders: Set<String> = ["gen-0", "gen-1", "ref-0", "learner-0"]
        #expect(TestKit.waitFor(5) { coordinator.workers().filter { holders.contains($0.registration.workerID) }.count == 4 })
        for m in coordinator.workers() where ["gen-0", "gen-1", "ref-0"].contains(m.registration.workerID) {
            #expect(m.policyVersion == 1, "\(m.registration.workerID)")
            #expect(m.weightsChecksum == local.weightsChecksum, "\(m.registration.workerID)")
        }
        #expect(TestKit.waitFor(5) {
            coordinator.workers().first { $0.registration.workerID == "learner-0" }.map { $0.policyVersion == 1 && $0.weightsChecksum == local.weightsChecksum } == true
        })
        // The reward model does not follow the policy.
        #expect(coordinator.workers().first { $0.registration.workerID == "rm-0" }?.weightsChecksum == initial)

        // A request for the old version is refused; the new one is served.
        let prompt = GenerateRequest.Prompt(id: 1, tokens: [1, 5, 6])
        var request = GenerateRequest(prompts: [prompt], samplesPerPrompt: 2, sampling: SamplingSettings(temperature: 1), maxNewTokens: 6)
        do {
            _ = try coordinator.generate(request, timeoutSeconds: 30)
            Issue.record("a generator served policy version 0 after the sync")
        } catch {
            #expect("\(error)".contains("policy version 0 requested"), "\(error)")
        }
        request.policyVersion = 1
        let samples = try coordinator.generate(request, timeoutSeconds: 30)
        #expect(samples.count == 2)
        let sequences = samples.map { TokenSequence(id: 0, prompt: prompt.tokens, response: $0.tokens) }
        // The synced reference agrees with the synced generators on the new policy.
        let reference = try coordinator.referenceLogProbs(sequences, policyVersion: 1)
        for (r, s) in zip(reference, samples) {
            for (a, b) in zip(r, s.logProbs) { #expect(abs(a - b) < 1e-4) }
        }
        #expect(try coordinator.score(sequences, model: .rewardModel).count == 2)
        #expect(throws: CoordinatorError.self) { _ = try coordinator.referenceLogProbs(sequences, policyVersion: 0, timeoutSeconds: 30) }

        // A generator that joins later (holding version 0) is brought up to version 1 before it gets work.
        let late = try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint,
                                                  "--id", "gen-late", "--checkpoint", RoleProcessTests.checkpoint])
        defer { if late.isRunning { late.terminate() } }
        #expect(TestKit.waitFor(30) {
            coordinator.workers().first { $0.registration.workerID == "gen-late" }.map {
                $0.policyVersion == 1 && $0.weightsChecksum == local.weightsChecksum
            } == true
        })
        request.prompts = (0..<6).map { (i: Int) -> GenerateRequest.Prompt in GenerateRequest.Prompt(id: UInt64(i), tokens: [1, Int32(9 + i)]) }
        #expect(try coordinator.generate(request, timeoutSeconds: 60).count == 12)
    }

    @Test func sigtermDrainsAndLeavesAndMetricsAreServed() throws {
        let coordinator = try RoleProcessTests.coordinator(metrics: true)
        defer { coordinator.shutdown() }
        let worker = try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint,
                                                    "--id", "gen-drain", "--checkpoint", RoleProcessTests.checkpoint])
        defer { if worker.isRunning { worker.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().count == 1 })
        var request = ClusterProcessTests.request(prompt: [1, 9], samples: 3, tokens: 8)
        request.sampling.temperature = 1
        _ = try coordinator.generate(request, timeoutSeconds: 30)

        // Metrics over HTTP: Prometheus text with the rlhf_ prefix and _total counters.
        let endpoint = try #require(coordinator.metricsEndpoint)
        let text = try RoleProcessTests.httpGet(endpoint: endpoint, path: "/metrics")
        #expect(text.hasPrefix("HTTP/1.0 200 OK"))
        #expect(text.contains("rlhf_workers{health=\"healthy\",role=\"generator\"} 1"))
        #expect(text.contains("rlhf_tasks_completed_total{role=\"generator\"} 1"))
        #expect(text.contains("rlhf_generated_tokens_total 24"))
        #expect(try RoleProcessTests.httpGet(endpoint: endpoint, path: "/nothing").hasPrefix("HTTP/1.0 404"))

        worker.terminate() // SIGTERM: drain, goodbye, exit 0
        worker.waitUntilExit()
        #expect(worker.terminationStatus == 0)
        #expect(TestKit.waitFor(5) { coordinator.workers().isEmpty }, "the coordinator still lists the drained worker")
    }

    /// A request of `prompts` prompts x `samples` samples of `tokens` tokens (no stop token), and what
    /// this process computes for it, prompt by prompt.
    static func bigRequest(prompts: Int, samples: Int, tokens: Int) -> GenerateRequest {
        let prompts = (0..<prompts).map { (i: Int) -> GenerateRequest.Prompt in
            let tokens: [Int32] = [1, Int32(5 + i % 50), Int32(60 + i % 30)]
            return GenerateRequest.Prompt(id: UInt64(i), tokens: tokens)
        }
        return GenerateRequest(prompts: prompts, samplesPerPrompt: samples, sampling: SamplingSettings(temperature: 1, topP: 1), seed: 4242, maxNewTokens: tokens)
    }

    static func expectExactlyOnceAndCorrect(_ got: [Samples.Sample], _ request: GenerateRequest) throws {
        let k = request.samplesPerPrompt
        #expect(got.map { "\($0.promptID)/\($0.index)" }
                == request.prompts.flatMap { p in (0..<k).map { "\(p.id)/\($0)" } })
        let local = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: RoleProcessTests.checkpoint)))
        for (i, prompt) in request.prompts.enumerated() where i % 5 == 0 {
            var one = request
            one.prompts = [prompt]
            let expected = try local.generate(batch: GeneratorService.requests(for: one))
            for j in 0..<k { #expect(got[k * i + j].tokens == expected[j].ids, "prompt \(prompt.id) sample \(j)") }
        }
    }

    /// The outcome of a generate call run on another thread.
    final class Pending: Sendable {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<[Samples.Sample], Error>?>(nil)
        func wait(_ seconds: Double) throws -> [Samples.Sample] {
            guard done.wait(timeout: .now() + seconds) == .success else { throw HTTPTimeout() }
            return try result.withLock { $0! }.get()
        }
    }

    /// Runs `coordinator.generate(request)` on another thread.
    static func generateInBackground(_ coordinator: Coordinator, _ request: GenerateRequest) -> Pending {
        let pending = Pending()
        Thread {
            let r = Result { try coordinator.generate(request, timeoutSeconds: 120) }
            pending.result.withLock { $0 = r }
            pending.done.signal()
        }.start()
        return pending
    }

    /// A task can overtake the acknowledgement of its worker's registration (the coordinator's
    /// dispatcher and its socket handler run on different threads). Here a bare ROUTER plays that
    /// coordinator: it answers a registration with a task stamped with epoch 7 first, then the
    /// acknowledgement. The answer must carry epoch 7, or the coordinator would fence it and the task
    /// would hang on a live worker.
    @Test func aTaskThatOvertakesTheRegistrationAckIsAnsweredUnderItsEpoch() async throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let answers = Mutex<[WireMessage]>([])
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        var taskMessage = try await PoolCalls.generate(ClusterProcessTests.request(prompt: [1, 9], samples: 1, tokens: 4), requestID: 41)
        taskMessage.epoch = 7
        let taskFrames = try taskMessage.frames()
        let (router, bound) = try loop.open(.router, bind: ["tcp://127.0.0.1:*"]) { frames in
            guard frames.count >= 2, let id = socketBox.withLock({ $0 }),
                  let message = try? WireMessage.decode(Array(frames.dropFirst())) else { return }
            if message.type == .register {
                var ack = Rlhf_V1_RegisterAck()
                ack.accepted = true
                ack.heartbeatIntervalMs = 200
                ack.epoch = 7
                loop.send(id, [frames[0]] + taskFrames)
                if let reply = try? WireMessage(type: .registerAck, requestID: message.requestID, body: ack).frames() {
                    loop.send(id, [frames[0]] + reply)
                }
            } else if message.requestID == 41 {
                answers.withLock { $0.append(message) }
            }
        }
        socketBox.withLock { $0 = router }
        let worker = try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", bound[0], "--id", "overtaken",
                                                    "--checkpoint", RoleProcessTests.checkpoint])
        defer { if worker.isRunning { worker.terminate() } }
        #expect(TestKit.waitFor(30) { !answers.withLock { $0.isEmpty } }, "the task was never answered")
        let answer = try #require(answers.withLock { $0.first })
        #expect(answer.type == .remoteReply && answer.epoch == 7, "answered \(answer.type) under epoch \(answer.epoch)")
        #expect(try Samples(wirePayload: ClusterActorSystem.replyValue(answer)).samples.count == 1)
    }

    @Test func killingAGeneratorMidBatchLosesNothing() throws {
        let coordinator = try RoleProcessTests.coordinator()
        defer { coordinator.shutdown() }
        let workers = try (0..<3).map { i in
            try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint, "--id", "gen-\(i)",
                                           "--checkpoint", RoleProcessTests.checkpoint])
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == 3 })
        let request = RoleProcessTests.bigRequest(prompts: 108, samples: 4, tokens: 100)
        let pending = RoleProcessTests.generateInBackground(coordinator, request)
        // Once work is flowing, kill -9 one generator while it holds tasks.
        #expect(TestKit.waitFor(30) { coordinator.status().workers.contains { $0.id == "gen-1" && $0.tasksInFlight > 0 } })
        kill(workers[1].processIdentifier, SIGKILL)
        try RoleProcessTests.expectExactlyOnceAndCorrect(try pending.wait(120), request)
        #expect(coordinator.status().tasksRedispatched >= 1)
        #expect(coordinator.metrics().contains("rlhf_tasks_redispatched_total"))
        #expect(coordinator.workers().first { $0.registration.workerID == "gen-1" }?.health == .dead)
    }

    @Test func aStoppedWorkerIsDeclaredDeadFencedAndRejoinsAsNew() throws {
        let coordinator = try RoleProcessTests.coordinator()
        defer { coordinator.shutdown() }
        let workers = try (0..<2).map { i in
            try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint, "--id", "gen-\(i)",
                                           "--checkpoint", RoleProcessTests.checkpoint])
        }
        defer { for w in workers { kill(w.processIdentifier, SIGCONT); if w.isRunning { w.terminate() } } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == 2 })
        let request = RoleProcessTests.bigRequest(prompts: 72, samples: 4, tokens: 100)
        let pending = RoleProcessTests.generateInBackground(coordinator, request)
        #expect(TestKit.waitFor(30) { coordinator.status().workers.contains { $0.id == "gen-0" && $0.tasksInFlight > 0 } })
        let firstLife = coordinator.workers().first { $0.registration.workerID == "gen-0" }!.epoch
        kill(workers[0].processIdentifier, SIGSTOP)
        let stopped = Date()
        #expect(TestKit.waitFor(5) { coordinator.workers().first { $0.registration.workerID == "gen-0" }?.health == .dead })
        #expect(Date().timeIntervalSince(stopped) < 2, "declared dead after \(Date().timeIntervalSince(stopped)) s")
        // Its tasks finish on the other generator.
        try RoleProcessTests.expectExactlyOnceAndCorrect(try pending.wait(120), request)
        // Woken up, it sends the result it was computing (refused: an earlier life) and registers anew.
        kill(workers[0].processIdentifier, SIGCONT)
        #expect(TestKit.waitFor(10) {
            coordinator.workers().first { $0.registration.workerID == "gen-0" }.map { $0.health == .healthy && $0.epoch != firstLife } == true
        })
        #expect(TestKit.waitFor(10) { (coordinator.status().rejectedFrames["fenced"] ?? 0) >= 1 })
    }

    @Test func aGeneratorWhoseComputeHangsIsFlaggedWithinASecond() throws {
        let coordinator = try RoleProcessTests.coordinator()
        defer { coordinator.shutdown() }
        let hung = try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", coordinator.endpoint, "--id", "gen-hang",
                                                  "--checkpoint", RoleProcessTests.checkpoint, "--fault-hang-after-steps", "30"])
        defer { if hung.isRunning { kill(hung.processIdentifier, SIGKILL) } }
        #expect(TestKit.waitFor(30) { coordinator.workers().first?.health == .healthy })
        let pending = RoleProcessTests.generateInBackground(coordinator, RoleProcessTests.bigRequest(prompts: 2, samples: 2, tokens: 100))
        // Progress stops after 30 steps while heartbeats go on: flagged hung about 1 s after the last progress.
        #expect(TestKit.waitFor(10) { coordinator.status().workers.first?.tokensProcessed ?? 0 > 0 })
        var lastTokens: UInt64 = 0, stalledSince = Date()
        let flagged = TestKit.waitFor(15) {
            let w = coordinator.workers().first!
            if w.tokensProcessed != lastTokens { lastTokens = w.tokensProcessed; stalledSince = Date() }
            return w.health == .hung
        }
        #expect(flagged)
        #expect(Date().timeIntervalSince(stalledSince) < 1.6, "flagged \(Date().timeIntervalSince(stalledSince)) s after the last progress seen")
        #expect(coordinator.status().workers.first?.health == .hung)
        #expect(coordinator.metrics().contains("rlhf_workers{health=\"hung\",role=\"generator\"} 1"))
        kill(hung.processIdentifier, SIGKILL)
        _ = try? pending.wait(1)
    }

    @Test func curveAdmitsOnlyTheAuthorizedKeys() throws {
        let dir = TestKit.scratch("curve")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in ["server", "worker", "stranger"] {
            let keys = try ClusterProcessTests.spawn(["keys", "generate", "--out", "\(dir)/\(name)"])
            keys.waitUntilExit()
            #expect(keys.terminationStatus == 0)
        }
        func key(_ file: String, line: Int) throws -> String {
            try String(contentsOfFile: "\(dir)/\(file)", encoding: .utf8).split(separator: "\n").map(String.init)[line]
        }
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 100
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        settings.curve = CurveServerKeys(secretKey: try key("server.key", line: 1), clients: [try key("worker.pub", line: 0)])
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let common = ["worker", "--role", "generator", "--coordinator", coordinator.endpoint]
        let cases: [(id: String, options: [String], says: String)] = [
            ("authorized", ["--curve-server", "\(dir)/server.pub", "--curve-key", "\(dir)/worker.key"], ""),
            ("plain", [], "requires CURVE encryption: give --curve-server"),
            ("stranger", ["--curve-server", "\(dir)/server.pub", "--curve-key", "\(dir)/stranger.key"],
             "did not admit this side's CURVE key (public key \(try key("stranger.pub", line: 0)))"),
            ("wrong-server", ["--curve-server", "\(dir)/stranger.pub", "--curve-key", "\(dir)/worker.key"],
             "check that --curve-server is its public key"),
        ]
        let workers = try cases.map { c in
            try WorkerIdentityProcessTests.spawn(common + ["--id", c.id] + c.options, log: "\(dir)/\(c.id).log")
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(20) { coordinator.workers().contains { $0.registration.workerID == "authorized" } })
        // The others get nothing through, and each leaves at once saying which keys are wrong (before: a
        // plain worker waited for ever, and rlhf status said "Resource temporarily unavailable").
        for (c, worker) in zip(cases, workers).dropFirst() {
            #expect(TestKit.waitFor(20) { !worker.isRunning }, "\(c.id) still running")
            #expect(worker.terminationStatus == 1)
            let log = (try? String(contentsOfFile: "\(dir)/\(c.id).log", encoding: .utf8)) ?? ""
            #expect(log.contains(c.says), "\(c.id): \(log)")
        }
        #expect(coordinator.workers().map(\.registration.workerID) == ["authorized"])
        // Nothing of theirs reached the coordinator's decoder; their handshakes are counted.
        #expect(coordinator.status().rejectedFrames.keys.sorted() == ["handshake"], "\(coordinator.status().rejectedFrames)")
        // rlhf status without keys, or with a key not admitted, says so at once.
        for (options, says) in [([String](), "requires CURVE encryption"),
                                (["--curve-server", "\(dir)/server.pub", "--curve-key", "\(dir)/stranger.key"], "did not admit this side's CURVE key")] {
            let status = try WorkerIdentityProcessTests.spawn(["status", "--coordinator", coordinator.endpoint, "--timeout", "20"] + options,
                                                              log: "\(dir)/status.log")
            let started = Date()
            status.waitUntilExit()
            #expect(status.terminationStatus == 1 && Date().timeIntervalSince(started) < 10)
            let said = (try? String(contentsOfFile: "\(dir)/status.log", encoding: .utf8)) ?? ""
            #expect(said.contains(says), "\(said)")
        }
    }

    struct HTTPTimeout: Error {}

    @Test func workersRegisterAgainWithARestartedCoordinator() throws {
        let first = try RoleProcessTests.coordinator()
        let endpoint = first.endpoint
        let worker = try ClusterProcessTests.spawn(["worker", "--role", "generator", "--coordinator", endpoint, "--id", "gen-back"])
        defer { if worker.isRunning { worker.terminate() } }
        #expect(TestKit.waitFor(30) { first.workers().count == 1 })
        first.shutdown()
        Thread.sleep(forTimeInterval: 0.5)
        // A new coordinator on the same endpoint knows nobody; the worker reconnects and registers again.
        var settings = Coordinator.Settings(bind: endpoint)
        settings.membership.heartbeatIntervalMilliseconds = 100
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        let second = try Coordinator(settings: settings)
        defer { second.shutdown() }
        #expect(TestKit.waitFor(20) { second.workers().first?.registration.workerID == "gen-back" && second.workers().first?.health == .healthy })
        #expect(worker.isRunning)
    }

    /// One HTTP/1.0 GET over a plain TCP connection (a ZeroMQ STREAM socket), the whole response.
    static func httpGet(endpoint: String, path: String) throws -> String {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        final class Box: @unchecked Sendable { var data: [UInt8] = []; var peer: [UInt8]? }
        let box = Mutex(Box())
        let closed = DispatchSemaphore(value: 0), connected = DispatchSemaphore(value: 0)
        let (socket, _) = try loop.open(.stream, connect: [endpoint]) { frames in
            guard frames.count == 2 else { return }
            box.withLock { b in
                if frames[1].isEmpty {
                    if b.peer == nil { b.peer = frames[0]; connected.signal() } else { closed.signal() }
                } else {
                    b.data += frames[1]
                }
            }
        }
        guard connected.wait(timeout: .now() + 5) == .success, let peer = box.withLock({ $0.peer }) else { throw HTTPTimeout() }
        loop.send(socket, [peer, Array("GET \(path) HTTP/1.0\r\nHost: test\r\n\r\n".utf8)])
        guard closed.wait(timeout: .now() + 5) == .success else { throw HTTPTimeout() }
        return String(decoding: box.withLock { $0.data }, as: UTF8.self)
    }
}

/// Across test hosts (network namespaces; root only): `rlhf launch` starts workers on two hosts, and
/// `rlhf status --json` from a third host sees them.
@Suite(.serialized, .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")))
struct NamespaceHostTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../cluster/make-test-hosts").standardized.path

    static func sh(_ arguments: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    /// The link of host 1 goes down for 10 s in the middle of a batch: its worker is declared dead within
    /// 2 s, the batch completes on host 2 with every sample once, and the worker is back (a new epoch)
    /// within 3 s of the link returning.
    @Test func aCutLinkIsDetectedAndTheWorkerRejoins() throws {
        setenv("PREFIX", "rlhft-h", 1)
        setenv("BRIDGE", "rlhftbr0", 1)
        #expect(try NamespaceHostTests.sh([NamespaceHostTests.script, "up", "2"]) == 0)
        defer { _ = try? NamespaceHostTests.sh([NamespaceHostTests.script, "down", "2"]) }
        var settings = Coordinator.Settings(bind: "tcp://10.77.0.1:\(try TestKit.freePort(host: "10.77.0.1"))")
        settings.membership.heartbeatIntervalMilliseconds = 100
        settings.buildHash = BuildIdentity.hash(ofExecutable: ClusterProcessTests.executable.path)
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let workers = try (1...2).map { i -> Process in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            p.arguments = ["netns", "exec", "rlhft-h\(i)", ClusterProcessTests.executable.path, "worker", "--role", "generator",
                           "--coordinator", coordinator.endpoint, "--id", "gen-h\(i)", "--checkpoint", RoleProcessTests.checkpoint]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        defer { for w in workers where w.isRunning { w.terminate() } }
        #expect(TestKit.waitFor(30) { coordinator.workers().filter { $0.health == .healthy }.count == 2 })
        let request = RoleProcessTests.bigRequest(prompts: 144, samples: 4, tokens: 100)
        let pending = RoleProcessTests.generateInBackground(coordinator, request)
        #expect(TestKit.waitFor(30) { coordinator.status().workers.contains { $0.id == "gen-h1" && $0.tasksInFlight > 0 } })
        let firstLife = coordinator.workers().first { $0.registration.workerID == "gen-h1" }!.epoch

        #expect(try NamespaceHostTests.sh(["-c", "ip link set veth-rlhft-h1 down"]) == 0)
        let cut = Date()
        #expect(TestKit.waitFor(5) { coordinator.workers().first { $0.registration.workerID == "gen-h1" }?.health == .dead })
        let detected = Date().timeIntervalSince(cut)
        #expect(detected < 2, "detected after \(detected) s")
        Thread.sleep(until: cut.addingTimeInterval(10))
        #expect(try NamespaceHostTests.sh(["-c", "ip link set veth-rlhft-h1 up"]) == 0)
        let restored = Date()
        #expect(TestKit.waitFor(10) {
            coordinator.workers().first { $0.registration.workerID == "gen-h1" }.map { $0.health == .healthy && $0.epoch != firstLife } == true
        })
        let rejoined = Date().timeIntervalSince(restored)
        #expect(rejoined < 3, "rejoined after \(rejoined) s")
        print(String(format: "cut link: detected after %.2f s, worker back %.2f s after the link", detected, rejoined))
        try RoleProcessTests.expectExactlyOnceAndCorrect(try pending.wait(120), request)
    }

    @Test func launchAcrossNamespaceHostsAndStatusFromAThird() throws {
        let environment = ["PREFIX": "rlhft-h", "BRIDGE": "rlhftbr0"]
        setenv("PREFIX", environment["PREFIX"]!, 1)
        setenv("BRIDGE", environment["BRIDGE"]!, 1)
        #expect(try NamespaceHostTests.sh([NamespaceHostTests.script, "up", "3"]) == 0)
        defer { _ = try? NamespaceHostTests.sh([NamespaceHostTests.script, "down", "3"]) }
        let checkpoint = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../LlamaCoreTests/Resources/models/tiny-gqa.bin").standardized.path
        let endpoint = "tcp://10.77.0.1:\(try TestKit.freePort(host: "10.77.0.1"))"
        let dir = TestKit.scratch("ns")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let spec = """
        coordinator: \(endpoint)
        heartbeat_ms: 100
        hosts:
          - {name: h1, address: local, namespace: rlhft-h1, workers: {generator: 2}}
          - {name: h2, address: local, namespace: rlhft-h2, workers: {generator: 1, reward-model: 1}}
        model: {checkpoint: \(checkpoint)}
        plan:
          - generate: {prompts: 4, samples: 2, max_new_tokens: 8}
          - hold: {seconds: 6}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let launch = Process()
        launch.executableURL = ClusterProcessTests.executable
        launch.arguments = ["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"]
        let launchLog = dir + "/launch.log"
        _ = FileManager.default.createFile(atPath: launchLog, contents: nil)
        launch.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: launchLog))
        launch.standardError = FileHandle.nullDevice
        try launch.run()
        defer { if launch.isRunning { launch.terminate() } }

        // Status from the third host, until all four workers are healthy.
        var listed: [[String: Any]] = []
        let seen = TestKit.waitFor(40) {
            let out = dir + "/status.json"
            _ = FileManager.default.createFile(atPath: out, contents: nil)
            let status = Process()
            status.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            status.arguments = ["netns", "exec", "rlhft-h3", ClusterProcessTests.executable.path, "status",
                                "--coordinator", endpoint, "--json", "--timeout", "1"]
            status.standardOutput = try? FileHandle(forWritingTo: URL(fileURLWithPath: out))
            status.standardError = FileHandle.nullDevice
            guard (try? status.run()) != nil else { return false }
            status.waitUntilExit()
            guard status.terminationStatus == 0, let data = FileManager.default.contents(atPath: out),
                  let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let workers = object["workers"] as? [[String: Any]] else { return false }
            listed = workers
            return workers.filter { $0["state"] as? String == "healthy" }.count == 4
        }
        #expect(seen, "status from rlhft-h3 saw \(listed.count) workers")
        #expect(Set(listed.compactMap { $0["id"] as? String })
                == ["generator-h1-0", "generator-h1-1", "generator-h2-0", "reward-model-h2-0"])
        launch.waitUntilExit()
        let log = (try? String(contentsOfFile: launchLog, encoding: .utf8)) ?? ""
        #expect(launch.terminationStatus == 0, "\(log)")
        #expect(log.contains("4 prompts x 2 samples -> 8 samples"))
        #expect(log.contains("stopped 4 workers and the coordinator"))
    }
}
