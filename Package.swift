// swift-tools-version:5.9
//
// swift-distill: distributed knowledge distillation on CPUs (Open MPI + OpenBLAS).
// Layers import downwards only: distill -> Models -> Layers -> Tensors -> CBLAS.
import PackageDescription

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
        .library(name: "Distillation", targets: ["Distillation"]),
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

        // MARK: Engine
        .target(name: "Tensors", dependencies: ["CBLAS"]),
        .target(name: "Layers", dependencies: ["Tensors"]),
        .target(name: "Models", dependencies: ["Layers"]),
        .target(name: "Collectives", dependencies: ["Layers", "CMPI"]),
        .target(name: "Datasets", dependencies: ["Tensors", "CZlib"]),
        .target(name: "Distillation", dependencies: ["Models", "Collectives"]),
        .target(name: "Training", dependencies: ["Distillation", "Datasets", "Yams"]),

        // MARK: Command line
        .executableTarget(name: "distill", dependencies: [
            "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // MARK: Tests
        .target(name: "TestSupport", dependencies: ["Tensors"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorsTests", dependencies: ["Tensors", "TestSupport"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers", "TestSupport"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TestSupport"]),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "TestSupport"]),
        .testTarget(name: "DistillationTests", dependencies: ["Distillation", "TestSupport"]),
    ]
)
