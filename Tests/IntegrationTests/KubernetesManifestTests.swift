import Foundation
@testable import RLHFCLI
import Testing
import TestKit
import Yams

/// `rlhf launch SPEC --emit kubernetes DIR`, checked offline (no cluster runs here): every manifest
/// passes Kubernetes' own schemas (`kubernetes-validate --strict`, from PyPI, installed by
/// scripts/bootstrap in .venv-tools), and every pod's command line is one the rlhf parser accepts.
@Suite struct KubernetesManifestTests {
    /// kubernetes-validate: $KUBERNETES_VALIDATE, else the bootstrap's venv, else on PATH.
    static var validator: String? {
        let candidates = [ProcessInfo.processInfo.environment["KUBERNETES_VALIDATE"], TestKit.repository + "/.venv-tools/bin/kubernetes-validate"]
            + (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/kubernetes-validate" }
        return candidates.compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Emits `spec`'s manifests; the directory.
    static func emit(_ spec: String, extra: [String] = []) throws -> String {
        let dir = TestKit.scratch("rlhf-k8s")
        let result = try CLITests.rlhf(["launch", spec, "--emit", "kubernetes", dir] + extra, directory: TestKit.repository)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        return dir
    }

    /// Validates every file of `dir` strictly; the output of a failure.
    static func validate(_ dir: String) throws {
        let validator = try #require(KubernetesManifestTests.validator, "kubernetes-validate not found: run scripts/bootstrap (it installs it in .venv-tools)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".yaml") }.sorted().map { dir + "/" + $0 }
        #expect(files.count >= 6)
        let (status, text) = TestKit.run(validator, ["--strict"] + files)
        #expect(status == 0, "\(text)")
        #expect(text.components(separatedBy: " passed for resource ").count - 1 == files.count, "\(text)")
    }

    struct Missing: Error, CustomStringConvertible { let description: String }

    /// `value`, or a failure naming `what` is missing.
    static func need<T>(_ value: T?, _ what: String) throws -> T {
        guard let value else { throw Missing(description: "no \(what)") }
        return value
    }

    /// The objects of `dir` by kind.
    static func objects(_ dir: String) throws -> [(kind: String, object: [String: Any])] {
        try FileManager.default.contentsOfDirectory(atPath: dir).sorted().map { file in
            let loaded = try Yams.load(yaml: String(contentsOfFile: dir + "/" + file, encoding: .utf8))
            let object = try KubernetesManifestTests.need(loaded as? [String: Any], "a mapping in \(file)")
            return (object["kind"] as? String ?? "", object)
        }
    }

    static func container(_ object: [String: Any]) -> [String: Any]? {
        (((object["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]).flatMap {
            ($0["containers"] as? [[String: Any]])?.first
        }
    }

    /// Every pod's command line: what the rlhf parser makes of it (a worker's `$(POD_NAME)` as Kubernetes expands it).
    static func checkCommandLines(_ dir: String, expecting workers: [String: Int]) throws {
        var seen: [String: Int] = [:]
        for (kind, object) in try objects(dir) where kind == "StatefulSet" || kind == "Deployment" {
            let container = try KubernetesManifestTests.need(container(object), "a container")
            #expect(container["command"] as? [String] == ["rlhf"])
            let args = try KubernetesManifestTests.need(container["args"] as? [String], "args")
            let name = (object["metadata"] as? [String: Any])?["name"] as? String ?? ""
            if kind == "StatefulSet" {
                let replicas = (object["spec"] as? [String: Any])?["replicas"] as? Int ?? 0
                seen[name] = replicas
                for ordinal in 0..<replicas {
                    // The pod's name is the worker id the coordinator awaits.
                    let expanded = args.map { $0 == "$(POD_NAME)" ? "\(name)-\(ordinal)" : $0 }
                    #expect(throws: Never.self, "\(expanded)") { _ = try RLHF.parseAsRoot(expanded) }
                    #expect(expanded.contains("\(name)-\(ordinal)"))
                }
            } else {
                #expect(throws: Never.self, "\(args)") { _ = try RLHF.parseAsRoot(args) }
                #expect(args.contains("--external-workers"))
            }
        }
        #expect(seen == workers)
    }

    @Test func theDefaultClustersManifestsPassKubernetesSchemas() throws {
        let dir = try KubernetesManifestTests.emit("cluster/local.yaml")
        try KubernetesManifestTests.validate(dir)
        try KubernetesManifestTests.checkCommandLines(dir, expecting: ["generator-local": 2, "reward-model-local": 1, "safety-model-local": 1,
                                                                       "learner-local": 1, "reference-policy-local": 1])
        let kinds = try KubernetesManifestTests.objects(dir).map(\.kind)
        #expect(kinds.filter { $0 == "Deployment" }.count == 1 && kinds.contains("ConfigMap") && kinds.contains("PersistentVolumeClaim"))
        let deployment = try KubernetesManifestTests.need(try KubernetesManifestTests.objects(dir).first { $0.kind == "Deployment" }?.object, "a Deployment")
        let probe = try KubernetesManifestTests.need(KubernetesManifestTests.container(deployment)?["livenessProbe"] as? [String: Any], "a liveness probe")
        #expect((probe["httpGet"] as? [String: Any])?["path"] as? String == "/metrics")
    }

    @Test func theMultiHostExamplesManifestsPassKubernetesSchemas() throws {
        // Its checkpoint is a path on those machines, not here: emitting does not need the files.
        let dir = try KubernetesManifestTests.emit("cluster/multi-host.example.yaml", extra: ["--image", "registry.example/rlhf:1.0"])
        try KubernetesManifestTests.validate(dir)
        try KubernetesManifestTests.checkCommandLines(dir, expecting: ["generator-gpu-less-a": 4, "reference-policy-gpu-less-a": 1,
                                                                       "reward-model-gpu-less-b": 1, "safety-model-gpu-less-b": 1,
                                                                       "learner-gpu-less-b": 1])
    }

    @Test func curveKeysBecomeASecretMountedWhereTheSpecNamesThem() throws {
        let dir = TestKit.scratch("rlhf-k8s-curve")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for name in ["server", "client"] {
            let made = try CLITests.rlhf(["keys", "generate", "--out", dir + "/" + name])
            #expect(made.status == 0, "\(made.stderr)")
        }
        try """
        coordinator: tcp://127.0.0.1:5555
        curve: {server: server, client: client}
        hosts:
          - name: cpu
            slurm: {cpus_per_task: 4}
            workers: {generator: 2, learner: 1}
        model: {checkpoint: \(TestKit.repository)/models/chat-world/sft.bin}
        plan:
          - generate: {prompts: 4, samples: 2, max_new_tokens: 8, temperature: 1.0}
        """.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let out = try KubernetesManifestTests.emit(dir + "/spec.yaml")
        try KubernetesManifestTests.validate(out)
        try KubernetesManifestTests.checkCommandLines(out, expecting: ["generator-cpu": 2, "learner-cpu": 1])
        let objects = try KubernetesManifestTests.objects(out)
        let secret = try KubernetesManifestTests.need(objects.first { $0.kind == "Secret" }?.object, "a Secret")
        let data = try KubernetesManifestTests.need(secret["data"] as? [String: String], "the Secret's data")
        #expect(Set(data.keys) == ["server.key", "server.pub", "client.key", "client.pub"])
        #expect(data["client.pub"].flatMap { Data(base64Encoded: $0) } == FileManager.default.contents(atPath: dir + "/client.pub"))
        // The learner serves weights with the server key; each worker's threads are its CPUs.
        let learner = try KubernetesManifestTests.need(objects.first { $0.kind == "StatefulSet" && ($0.object["metadata"] as? [String: Any])?["name"] as? String == "learner-cpu" }?.object, "learner-cpu")
        let args = try KubernetesManifestTests.need(KubernetesManifestTests.container(learner)?["args"] as? [String], "the learner's args")
        #expect(args.contains("--curve-serve-key") && args.contains("--threads") && args.contains("4"))
    }

    @Test func aHostNameKubernetesCannotTakeIsRefused() throws {
        let dir = TestKit.scratch("rlhf-k8s-bad")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try """
        coordinator: tcp://127.0.0.1:5555
        hosts:
          - name: Big_Host
            workers: {generator: 1}
        model: {checkpoint: /nowhere/model.bin}
        plan:
          - generate: {prompts: 4, samples: 2, max_new_tokens: 8, temperature: 1.0}
        """.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--emit", "kubernetes", dir + "/out"])
        #expect(result.status == 1 && result.stderr.contains("host Big_Host: a Kubernetes name needs lowercase letters"), "\(result.stderr)")
    }
}
