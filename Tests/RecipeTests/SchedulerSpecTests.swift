import ClusterRuntime
import Foundation
import Launcher
import Recipe
import Testing

/// Hosts that a scheduler places: `slurm:` hosts (an allocation, each worker a step), external hosts
/// (Kubernetes' pods join on their own), and the address workers on other machines dial.
@Suite struct SchedulerSpecTests {
    static func spec(_ hosts: String, extra: String = "") throws -> ClusterSpec {
        try ClusterSpec.parse("""
        coordinator: tcp://*:5555
        \(extra)
        hosts:
        \(hosts)
        model: {checkpoint: \(SpecTests.checkpoint)}
        plan:
          - generate: {prompts: 4, samples: 2, max_new_tokens: 8, temperature: 1.0}
        """, baseDirectory: "/")
    }

    @Test func aSlurmHostIsParsed() throws {
        let spec = try SchedulerSpecTests.spec("""
          - name: cluster
            slurm: {partition: cpu, nodes: 2, ntasks_per_node: 3, cpus_per_task: 4, mem: 16G, time: "1-00:00:00", account: rl, qos: high,
                    constraint: avx512, extra_args: [--exclusive]}
            workers: {generator: 4}
        """)
        let host = try #require(spec.hosts.first)
        #expect(host.isSlurm && !host.isLocal && !host.isExternal && host.address == WorkerHost.slurmAddress)
        let slurm = try #require(host.slurm)
        #expect(slurm.partition == "cpu" && slurm.nodes == 2 && slurm.tasksPerNode == 3 && slurm.cpusPerTask == 4 && slurm.memory == "16G")
        #expect(slurm.time == "1-00:00:00" && slurm.account == "rl" && slurm.qos == "high" && slurm.constraint == "avx512")
        #expect(slurm.extraArguments == ["--exclusive"])
        // Numbers where Slurm takes them (MB, minutes); a line of options.
        let plain = try SchedulerSpecTests.spec("""
          - name: c
            slurm: {mem: 4096, time: 30, extra_args: "--exclusive --gres=none"}
            workers: {generator: 1}
        """)
        #expect(plain.hosts[0].slurm?.memory == "4096" && plain.hosts[0].slurm?.time == "30")
        #expect(plain.hosts[0].slurm?.extraArguments == ["--exclusive", "--gres=none"])
        #expect(plain.hosts[0].slurm?.nodes == 1 && plain.hosts[0].slurm?.cpusPerTask == 1)
        // Unquoted, YAML 1.1 reads 2:00:00 as 7200 (base 60): the time is taken as written.
        let clock = try SchedulerSpecTests.spec("""
          - name: c
            slurm: {time: 2:00:00, mem: 0}
            workers: {generator: 1}
        """)
        #expect(clock.hosts[0].slurm?.time == "2:00:00" && clock.hosts[0].slurm?.memory == "0")
    }

    @Test func badSlurmHostsAreRefusedNamingTheKey() throws {
        let cases: [(String, String)] = [
            ("slurm: {nodes: 0}\n    workers: {generator: 1}", "hosts[0].slurm.nodes"),
            ("slurm: {cpus_per_task: two}\n    workers: {generator: 1}", "hosts[0].slurm.cpus_per_task"),
            ("slurm: {cpus_per_task: 257}\n    workers: {generator: 1}", "hosts[0].slurm.cpus_per_task"),
            ("slurm: {partition: \"a b\"}\n    workers: {generator: 1}", "hosts[0].slurm.partition"),
            ("slurm: {gpus: 1}\n    workers: {generator: 1}", "hosts[0].slurm.gpus"),
            ("slurm: {extra_args: [exclusive]}\n    workers: {generator: 1}", "hosts[0].slurm.extra_args"),
            ("slurm: {}\n    address: user@h\n    workers: {generator: 1}", "hosts[0].address"),
            ("slurm: {cpus_per_task: 4}\n    threads: {generator: 2}\n    workers: {generator: 1}", "hosts[0].threads"),
        ]
        for (host, key) in cases {
            #expect {
                try SchedulerSpecTests.spec("  - name: c\n    " + host)
            } throws: { error in
                (error as? ClusterSpec.Invalid)?.key == key
            }
        }
        #expect {
            try SchedulerSpecTests.spec("""
              - name: a
                slurm: {}
                workers: {generator: 1}
              - name: b
                slurm: {}
                workers: {learner: 1}
            """)
        } throws: { error in "\(error)".contains("more than one slurm host") }
        #expect {
            try SchedulerSpecTests.spec("""
              - name: a
                workers: {generator: 1}
              - name: a
                workers: {learner: 1}
            """)
        } throws: { error in "\(error)".contains("share a name") }
    }

    @Test func workersElsewhereDialTheAdvertisedAddress() throws {
        #expect(ClusterLaunch.workerEndpoint("tcp://0.0.0.0:5555", advertise: "head-node") == "tcp://head-node:5555")
        #expect(ClusterLaunch.workerEndpoint("tcp://*:5555", advertise: "10.0.0.1") == "tcp://10.0.0.1:5555")
        #expect(ClusterLaunch.workerEndpoint("tcp://10.0.0.2:5555", advertise: "head-node") == "tcp://10.0.0.2:5555")
        #expect(ClusterLaunch.workerEndpoint("tcp://0.0.0.0:5555", advertise: nil) == "tcp://0.0.0.0:5555")
        let spec = try SchedulerSpecTests.spec("  - name: c\n    slurm: {}\n    workers: {generator: 1}", extra: "advertise: login-1")
        #expect(spec.advertise == "login-1")
        #expect(throws: ClusterSpec.Invalid.self) { try SchedulerSpecTests.spec("  - name: c\n    workers: {generator: 1}", extra: "advertise: \"tcp://x:1\"") }
    }

    @Test func anExternalHostsWorkersAreAwaited() throws {
        let spec = try SchedulerSpecTests.spec("  - name: k8s\n    address: external\n    workers: {generator: 2}")
        #expect(spec.hosts[0].isExternal && !spec.hosts[0].isLocal && spec.hosts[0].workerID(.generator, 1) == "generator-k8s-1")
    }

    @Test func aPlacementComesFromTheSchedulersEnvironment() {
        let slurm = SchedulerPlacement.from(environment: ["SLURM_JOB_ID": "12", "SLURM_STEP_ID": "3", "SLURMD_NODENAME": "n1"])
        #expect(slurm == SchedulerPlacement(scheduler: "slurm", jobID: "12", stepID: "3", node: "n1"))
        #expect(slurm?.summary == "slurm job 12 step 3 on n1")
        let pod = SchedulerPlacement.from(environment: ["KUBERNETES_SERVICE_HOST": "10.96.0.1", "HOSTNAME": "generator-k8s-0", "RLHF_NODE_NAME": "w2"])
        #expect(pod == SchedulerPlacement(scheduler: "kubernetes", jobID: "generator-k8s-0", node: "w2"))
        #expect(SchedulerPlacement.from(environment: ["HOSTNAME": "laptop"]) == nil)
        #expect(SchedulerPlacement(wire: slurm!.wire) == slurm && SchedulerPlacement(wire: .init()) == nil)
    }
}
