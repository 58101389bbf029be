// swift-tools-version:5.9
//
// swift-distill: distributed knowledge distillation on CPUs (Open MPI + OpenBLAS).
// One layer per target; imports point down only, and every target lists each target it imports (launch/test builds
// with --explicit-target-dependency-import-check error, so a sideways or undeclared import fails the build):
//   distill → Training → Distillation → {Models, Collectives, TensorFiles} → Layers → Tensors → CBLAS
//   Training → Datasets → Tensors;  Collectives → CMPI → COpenMPI (Collectives does not know Layers)
import PackageDescription

// The engine's kernels (Swift SIMD over unsafe buffers) are compiled for the building machine's CPU, so they use its
// vector width (AVX2 / AVX-512 on x86-64) instead of the architecture's baseline (SSE2). The binary then runs on that
// machine's kind of CPU; set DISTILL_TARGET_CPU (an LLVM CPU name, e.g. x86-64, haswell) to build for others.
// Floating-point results do not change: Swift contracts no multiply-add into an FMA, and no reduction is reordered.
let targetCPU = Context.environment["DISTILL_TARGET_CPU"] ?? "native"
let kernelSettings: [SwiftSetting] = [.unsafeFlags(["-target-cpu", targetCPU])]

let package = Package(
    name: "swift-distill",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "distill", targets: ["distill"]),
        .library(name: "Tensors", targets: ["Tensors"]),
        .library(name: "Layers", targets: ["Layers"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Datasets", targets: ["Datasets"]),
        .library(name: "Collectives", targets: ["Collectives"]),
        .library(name: "TensorFiles", targets: ["TensorFiles"]),
        .library(name: "Distillation", targets: ["Distillation"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // MARK: System libraries and C shims
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "COpenMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPI", dependencies: ["COpenMPI"]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: Engine: tensors and autograd, layers, models
        .target(name: "Tensors", dependencies: ["CBLAS"], swiftSettings: kernelSettings),
        .target(name: "Layers", dependencies: ["Tensors"]),
        .target(name: "Models", dependencies: ["Layers", "Tensors"]),

        // MARK: Data, processes, files
        .target(name: "Datasets", dependencies: ["Tensors", "CZlib"]),
        .target(name: "Collectives", dependencies: ["Tensors", "CMPI"]),
        // safetensors (strict reader, atomic writer) and loading/saving a module's state.
        .target(name: "TensorFiles", dependencies: ["Layers", "Tensors"]),

        // MARK: Methods and the trainer
        .target(name: "Distillation", dependencies: ["Models", "Layers", "Tensors", "Collectives", "TensorFiles"]),
        .target(name: "Training", dependencies: ["Distillation", "Models", "Layers", "Tensors", "Collectives", "Datasets",
                                                 "TensorFiles", "Yams"]),

        // MARK: Command line
        .executableTarget(name: "distill", dependencies: [
            "Training", "Distillation", "Models", "Layers", "Tensors", "Collectives", "Datasets", "TensorFiles",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests
        .target(name: "TestSupport", dependencies: ["Tensors", "Layers", "TensorFiles"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "TestSupport"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "Tensors", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Layers", "Tensors", "TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "Tensors", "TestSupport"]),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "Tensors", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Distillation", "Models", "Layers", "Datasets", "Collectives",
                                                          "TensorFiles", "Tensors", "TestSupport", "Yams"]),
        .testTarget(name: "DistillationTests", dependencies: ["Distillation", "Models", "Layers", "Collectives", "Tensors", "TensorFiles",
                                                              "TestSupport"]),
    ]
)

// MARK: Fuzzing (launch/fuzz only)
// libFuzzer targets for the readers of untrusted input, built with -sanitize=fuzzer (which supplies main), so the
// target exists only when DISTILL_FUZZ is set: an ordinary build would have no entry point to link.
if Context.environment["DISTILL_FUZZ"] != nil {
    package.targets.append(.executableTarget(name: "DistillFuzz", dependencies: ["Datasets", "TensorFiles", "Training"],
                                             path: "Sources/DistillFuzz"))
}
