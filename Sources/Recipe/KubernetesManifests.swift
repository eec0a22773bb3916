import ClusterRuntime
import Foundation
import Launcher
import Yams

/// `rlhf launch SPEC --emit kubernetes DIR`: the spec's cluster as Kubernetes objects, one file each.
/// The coordinator is a Deployment (one replica, replaced never beside itself) with a Service in front
/// of its ZeroMQ and metrics ports and its liveness from `/metrics`; each (host, role) of the spec is a
/// StatefulSet running `rlhf worker`, named `ROLE-HOST` so that its pods' names (`ROLE-HOST-0`, ...)
/// are the worker ids the launcher awaits (the coordinator runs `rlhf launch --external-workers`); the
/// spec is a ConfigMap, the run directory (journal, logs, the learner's state) a PersistentVolumeClaim,
/// and CURVE keys a Secret. The image holds the rlhf executable on its PATH and the spec's directory
/// tree at `workdir` as it is here (paths under this directory are mapped there; other absolute paths
/// are taken as they are). Pure: it makes the objects; `write(to:)` writes them.
public struct KubernetesManifests {
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public var spec: ClusterSpec
    /// The spec's text (the ConfigMap's content).
    public var specText: String
    /// The spec file's absolute path here.
    public var specPath: String
    /// This directory (what `workdir` is in the image).
    public var localDirectory: String
    public var image = "swiftrlhf:latest"
    public var workdir = "/opt/swiftrlhf"
    /// The run directory's name under the volume's `runs/`.
    public var runName = "run"
    /// The PersistentVolumeClaim's size.
    public var storage = "10Gi"
    /// Where the run volume is mounted in every pod.
    public static let volumeMount = "/rlhf"

    public init(spec: ClusterSpec, specText: String, specPath: String, localDirectory: String) {
        self.spec = spec
        self.specText = specText
        self.specPath = specPath
        self.localDirectory = localDirectory
    }

    /// Where the image has a file that is at `path` here.
    public func imagePath(_ path: String) -> String {
        let base = localDirectory.hasSuffix("/") ? localDirectory : localDirectory + "/"
        return path.hasPrefix(base) ? workdir + "/" + path.dropFirst(base.count) : path
    }

    var runDirectory: String { KubernetesManifests.volumeMount + "/runs/" + runName }
    var coordinatorPort: Int { KubernetesManifests.port(spec.coordinator) ?? 5555 }
    var metricsPort: Int { spec.metrics.flatMap(KubernetesManifests.port) ?? 9555 }

    static func port(_ endpoint: String) -> Int? { endpoint.split(separator: ":").last.flatMap { Int($0) } }

    /// The name of host `host`'s StatefulSet of `role`.
    static func statefulSetName(_ role: WorkerRole, _ host: WorkerHost) -> String { "\(role.rawValue)-\(host.name)" }

    /// The `rlhf worker` arguments of a pod of `role` on `host` (its id is the pod's name, `$(POD_NAME)`).
    public func workerArguments(role: WorkerRole, host: WorkerHost) -> [String] {
        spec.workerArguments(id: "$(POD_NAME)", role: role, host: host, coordinator: "tcp://rlhf-coordinator:\(coordinatorPort)", runID: nil,
                             stateDirectory: runDirectory + "/learner-state", path: imagePath)
    }

    /// The `rlhf launch` arguments of the coordinator's pod.
    public var coordinatorArguments: [String] {
        ["launch", imagePath(specPath), "--run-dir", runDirectory, "--external-workers",
         "--coordinator-bind", "tcp://0.0.0.0:\(coordinatorPort)", "--metrics-bind", "tcp://0.0.0.0:\(metricsPort)"]
    }

    /// The objects by file name, in the order `kubectl apply -f DIR` should see them.
    public func objects() throws -> [(file: String, object: [String: Any])] {
        let dns = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
        for host in spec.hosts {
            guard host.name.wholeMatch(of: dns) != nil, host.name.count <= 30 else {
                throw Invalid(description: "host \(host.name): a Kubernetes name needs lowercase letters, digits and '-' (at most 30 here, "
                              + "its StatefulSets being ROLE-\(host.name)): rename the host in the spec")
            }
        }
        var objects: [(String, [String: Any])] = []
        let labels = ["app.kubernetes.io/name": "rlhf", "app.kubernetes.io/part-of": "rlhf-\(runName)"]
        func metadata(_ name: String, _ extra: [String: String] = [:]) -> [String: Any] {
            ["name": name, "labels": labels.merging(extra) { $1 }]
        }
        objects.append(("00-spec-configmap.yaml", [
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata("rlhf-spec"),
            "data": ["spec.yaml": specText],
        ]))
        var curveItems: [[String: Any]] = []
        if let curve = spec.curve {
            var data: [String: String] = [:]
            for (key, file) in [("server.key", curve.server + ".key"), ("server.pub", curve.server + ".pub"),
                                ("client.key", curve.client + ".key"), ("client.pub", curve.client + ".pub")] {
                guard let bytes = FileManager.default.contents(atPath: file) else {
                    throw Invalid(description: "cannot read the CURVE key file \(file) for the Secret")
                }
                data[key] = bytes.base64EncodedString()
                curveItems.append(["key": key, "path": imagePath(file)])
            }
            objects.append(("01-curve-secret.yaml", [
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata("rlhf-curve"), "data": data,
            ]))
        }
        objects.append(("02-runs-pvc.yaml", [
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata("rlhf-runs"),
            // Every pod mounts it (the learner's state, the coordinator's journal): many nodes at once.
            "spec": ["accessModes": ["ReadWriteMany"], "resources": ["requests": ["storage": storage]]],
        ]))
        let coordinatorLabels = labels.merging(["app.kubernetes.io/component": "coordinator"]) { $1 }
        objects.append(("10-coordinator-service.yaml", [
            "apiVersion": "v1", "kind": "Service", "metadata": metadata("rlhf-coordinator"),
            "spec": ["selector": coordinatorLabels, "ports": [
                ["name": "zmq", "port": coordinatorPort, "targetPort": "zmq", "protocol": "TCP"],
                ["name": "metrics", "port": metricsPort, "targetPort": "metrics", "protocol": "TCP"],
            ]],
        ]))
        let probe: [String: Any] = ["httpGet": ["path": "/metrics", "port": "metrics"], "initialDelaySeconds": 10, "periodSeconds": 10,
                                    "timeoutSeconds": 5, "failureThreshold": 6]
        objects.append(("11-coordinator-deployment.yaml", [
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata("rlhf-coordinator", ["app.kubernetes.io/component": "coordinator"]),
            "spec": [
                "replicas": 1,
                // One coordinator at a time: two would write one journal.
                "strategy": ["type": "Recreate"],
                "selector": ["matchLabels": coordinatorLabels],
                "template": [
                    "metadata": ["labels": coordinatorLabels],
                    "spec": podSpec(container: [
                        "name": "coordinator", "image": image, "workingDir": workdir, "command": ["rlhf"], "args": coordinatorArguments,
                        "ports": [["name": "zmq", "containerPort": coordinatorPort, "protocol": "TCP"],
                                  ["name": "metrics", "containerPort": metricsPort, "protocol": "TCP"]],
                        "livenessProbe": probe, "readinessProbe": probe,
                        "volumeMounts": mounts(spec: true, curve: curveItems),
                    ], curve: !curveItems.isEmpty),
                ],
            ],
        ]))
        var index = 20
        for host in spec.hosts {
            for role in WorkerRole.allCases {
                guard let count = host.workers[role], count > 0 else { continue }
                let name = KubernetesManifests.statefulSetName(role, host)
                let podLabels = labels.merging(["app.kubernetes.io/component": role.rawValue, "rlhf/host": host.name, "rlhf/workers": name]) { $1 }
                let cpus = host.computeThreads(role)
                objects.append(("\(index)-\(name)-service.yaml", [
                    "apiVersion": "v1", "kind": "Service", "metadata": metadata(name),
                    // Headless: the StatefulSet's pods get stable names; nothing connects to them through it.
                    "spec": ["clusterIP": "None", "selector": podLabels],
                ]))
                objects.append(("\(index + 1)-\(name)-statefulset.yaml", [
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(name, ["app.kubernetes.io/component": role.rawValue]),
                    "spec": [
                        "serviceName": name, "replicas": count, "podManagementPolicy": "Parallel",
                        "selector": ["matchLabels": podLabels],
                        "template": [
                            "metadata": ["labels": podLabels],
                            "spec": podSpec(container: [
                                "name": "worker", "image": image, "workingDir": workdir, "command": ["rlhf"],
                                "args": workerArguments(role: role, host: host),
                                "env": [["name": "POD_NAME", "valueFrom": ["fieldRef": ["fieldPath": "metadata.name"]]],
                                        ["name": "RLHF_NODE_NAME", "valueFrom": ["fieldRef": ["fieldPath": "spec.nodeName"]]]],
                                "resources": ["requests": ["cpu": "\(cpus)"]],
                                "volumeMounts": mounts(spec: false, curve: curveItems),
                            ], curve: !curveItems.isEmpty),
                        ],
                    ],
                ]))
                index += 2
            }
        }
        return objects
    }

    /// The volumes a pod mounts: the run volume, the spec (the coordinator's), the CURVE keys.
    private func mounts(spec withSpec: Bool, curve: [[String: Any]]) -> [[String: Any]] {
        var mounts: [[String: Any]] = [["name": "runs", "mountPath": KubernetesManifests.volumeMount]]
        if withSpec { mounts.append(["name": "spec", "mountPath": imagePath(specPath), "subPath": "spec.yaml", "readOnly": true]) }
        for item in curve {
            mounts.append(["name": "curve", "mountPath": item["path"]!, "subPath": item["key"]!, "readOnly": true])
        }
        return mounts
    }

    private func podSpec(container: [String: Any], curve: Bool) -> [String: Any] {
        var volumes: [[String: Any]] = [["name": "runs", "persistentVolumeClaim": ["claimName": "rlhf-runs"]],
                                        ["name": "spec", "configMap": ["name": "rlhf-spec"]]]
        if curve { volumes.append(["name": "curve", "secret": ["secretName": "rlhf-curve", "defaultMode": 0o400]]) }
        // A drained worker leaves within its drain timeout; the coordinator stops its workers first.
        return ["containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 60]
    }

    /// Writes each object to DIR/FILE as YAML (keys sorted); returns the paths written.
    @discardableResult
    public func write(to directory: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var written: [String] = []
        for (file, object) in try objects() {
            let path = directory + "/" + file
            let header = "# Written by `rlhf launch --emit kubernetes` (never run on a live cluster by its tests: see docs/kubernetes.md).\n"
            try (header + Yams.dump(object: object, sortKeys: true)).write(toFile: path, atomically: true, encoding: .utf8)
            written.append(path)
        }
        return written
    }
}
