// swift-tools-version:6.0
import PackageDescription

/// Kernels are compiled for the build machine's CPU (AVX-512/AVX2 + FMA where present): every host of a
/// cluster builds its own binary, and the wire handshake carries a build hash, so this never mixes.
/// The compute modules are optimized in debug builds too: unoptimized kernels run 20-50x slower, which
/// would leave the tests' real clusters (which train and sample) too slow to run the default plan's
/// `--quick` size.
let nativeCodegen: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-march=native"]),
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
    name: "SwiftRLHF",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rlhf", targets: ["RLHFCLI"]),
        .library(name: "LlamaCore", targets: ["LlamaCore"]),
        .library(name: "LlamaTraining", targets: ["LlamaTraining"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.40.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CBLAS",
            path: "Sources/CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        .systemLibrary(
            name: "CZeroMQ",
            path: "Sources/CZeroMQ",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .target(
            name: "CChecksum",
            path: "Sources/CChecksum"
        ),
        .target(
            name: "CKernels",
            path: "Sources/CKernels",
            // Kernels run optimized in debug builds too (see nativeCodegen).
            // Panels are written as 32-bit pairs and read as bfloat16 halves.
            cSettings: [.unsafeFlags(["-O3", "-march=native", "-fno-strict-aliasing"])]
        ),
        .target(
            name: "CWirePeer",
            path: "Sources/CWirePeer",
            linkerSettings: [.linkedLibrary("protobuf-c")]
        ),
        .target(
            name: "Wire",
            dependencies: ["LlamaCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .target(
            name: "Transport",
            dependencies: ["CZeroMQ"]
        ),
        .target(
            name: "ClusterRuntime",
            dependencies: ["Transport", "Wire", "LlamaCore",
                           .product(name: "Logging", package: "swift-log"),
                           .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .target(
            name: "Launcher",
            dependencies: ["ClusterRuntime", .product(name: "Logging", package: "swift-log")]
        ),
        .target(
            name: "Recipe",
            dependencies: ["ClusterRuntime", "Launcher", "Wire", "Workers", "RLHF", "EmbeddedTask", "LlamaCore", "LlamaTraining",
                           .product(name: "Logging", package: "swift-log"), .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                           .product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "Workers",
            dependencies: ["LlamaCore", "LlamaTraining", "RLHF", "Wire", "ClusterRuntime",
                           // Reward functions behind an HTTP endpoint (OpenRLHF's remote reward shape).
                           .product(name: "AsyncHTTPClient", package: "async-http-client")],
            swiftSettings: nativeCodegen
        ),
        .target(
            name: "LlamaCore",
            dependencies: ["CBLAS", "CChecksum", "CKernels", "Jinja"],
            swiftSettings: nativeCodegen
        ),
        // Hugging Face chat templates: a Jinja2 engine of their subset of the language.
        .target(
            name: "Jinja"
        ),
        .target(
            name: "RLHF",
            swiftSettings: nativeCodegen
        ),
        .target(
            name: "EmbeddedTask",
            dependencies: ["LlamaCore"],
            swiftSettings: nativeCodegen
        ),
        .target(
            name: "LlamaTraining",
            dependencies: ["LlamaCore", "CBLAS", "CKernels",
                           // gzip data files (zlib through compress-nio).
                           .product(name: "CompressNIO", package: "compress-nio"),
                           .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: nativeCodegen
        ),
        .target(
            name: "Benchmarks",
            dependencies: ["LlamaCore", "LlamaTraining", "Wire", "Transport", "ClusterRuntime", "Workers", "Recipe"],
            path: "Benchmarks",
            swiftSettings: nativeCodegen
        ),
        .executableTarget(
            name: "RLHFCLI",
            dependencies: [
                "LlamaCore",
                "LlamaTraining",
                "Wire",
                "Transport",
                "Workers",
                "Recipe", "Launcher",
                "Benchmarks",
                "ClusterRuntime",
                "EmbeddedTask",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: nativeCodegen
        ),
        // Tests: one target per module (unit tests, in-process), the process-level tests in
        // IntegrationTests, and TestKit, what they share (the built rlhf, processes, ports, fixtures).
        .target(
            name: "TestKit",
            dependencies: ["Wire"],
            path: "Tests/TestKit"
        ),
        .testTarget(
            name: "LlamaCoreTests",
            dependencies: ["LlamaCore", "TestKit"],
            exclude: ["Resources"]
        ),
        .testTarget(
            name: "JinjaTests",
            dependencies: ["Jinja"],
            resources: [.copy("Resources")]
        ),
        .testTarget(
            name: "LlamaTrainingTests",
            dependencies: ["LlamaCore", "LlamaTraining", "CKernels", "TestKit"]
        ),
        .testTarget(
            name: "RLHFTests",
            dependencies: ["RLHF"]
        ),
        .testTarget(
            name: "EmbeddedTaskTests",
            dependencies: ["EmbeddedTask", "LlamaCore", "TestKit"]
        ),
        .testTarget(
            name: "WireTests",
            dependencies: ["Wire", "CWirePeer", "LlamaCore", "TestKit"]
        ),
        .testTarget(
            name: "TransportTests",
            dependencies: ["Transport", "Wire", "TestKit"]
        ),
        .testTarget(
            name: "ClusterRuntimeTests",
            dependencies: ["ClusterRuntime", "Wire", "Transport", "LlamaCore", "Workers", "TestKit"]
        ),
        .testTarget(
            name: "WorkersTests",
            dependencies: ["Workers", "ClusterRuntime", "Wire", "Transport", "LlamaCore", "LlamaTraining", "TestKit"]
        ),
        .testTarget(
            name: "LauncherTests",
            dependencies: ["Launcher", "ClusterRuntime", "TestKit"]
        ),
        .testTarget(
            name: "RecipeTests",
            dependencies: ["Recipe", "Launcher", "ClusterRuntime", "Workers", "Wire", "LlamaCore", "LlamaTraining", "EmbeddedTask", "TestKit",
                           .product(name: "PropertyBased", package: "swift-property-based")]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["RLHFCLI", "Recipe", "Launcher", "Workers", "ClusterRuntime", "Wire", "Transport", "LlamaCore", "LlamaTraining",
                           "TestKit", .product(name: "PropertyBased", package: "swift-property-based"), .product(name: "Yams", package: "Yams")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
