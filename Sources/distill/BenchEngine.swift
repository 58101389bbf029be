// `distill bench engine`: sgemm throughput, and training / inference images per second of CIFAR ResNets.
import ArgumentParser
import Foundation
import Training
import Layers
import Models
import Tensors

struct BenchEngine: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Measures sgemm GFLOP/s and ResNet training/inference images/s at 1 and 2 threads.",
        discussion: """
        Training images/s counts forward + backward + SGD step on random 3×32×32 input with 100 classes.
        The step's split gives the share of its time in each part: convolution forward, data gradient and
        weight gradient (im2col, Winograd, sgemm, col2im, depthwise), batch norm, elementwise passes
        (activations, residual sums, gradient accumulation), the optimiser step, and the rest (pooling, the
        classifier, the loss, the tape). Inference runs each convolution with the batch norm, residual sum and
        ReLU after it as one pass (`--compare-fusion` also measures the layers one by one); its split is printed
        too. Build with `swift build -c release` first; debug builds are far slower.
        """)

    @OptionGroup var format: OutputFormat

    @Option(help: "Comma-separated model names.")
    var models = "resnet20,resnet32,resnet56"

    @Option(help: "Batch size.")
    var batch = 128

    @Option(help: "Timed training steps per measurement (after one warm-up step).")
    var steps = 4

    @Option(help: "Comma-separated thread counts to measure.")
    var threads = "1,2"

    @Flag(help: "Also measure each model with depthwise layers through per-group im2col products (the baseline the direct depthwise kernel replaces), in the same run.")
    var compareDepthwise = false

    @Flag(help: "Also measure inference with every convolution, batch norm, residual sum and ReLU run as separate passes (the baseline the fused inference replaces), in the same run.")
    var compareFusion = false

    @Flag(help: "Also measure inference with every block run on the whole batch (the baseline that running MobileNetV2's and ShuffleNet's blocks piece by piece of the batch replaces), in the same run.")
    var compareChunking = false

    @Flag(help: "Also measure training and inference with kernels split over threads by DispatchQueue.concurrentPerform (the baseline the worker pool replaces), in the same run.")
    var compareDispatch = false

    enum Part: String, ExpressibleByArgument, CaseIterable { case training, inference }

    @Option(help: "Measure only this part: training or inference (default: both).")
    var only: Part?

    @Option(help: "Output pixels of one piece of the batch when inference runs MobileNetV2's and ShuffleNet's blocks piece by piece (0: whole batch); default: 2048.")
    var chunkPixels: Int?

    @Option(help: "Winograd output tile for every 3×3 layer: 2 (F(2×2, 3×3)) or 4 (F(4×4, 3×3)); default: chosen per layer.")
    var winogradTile: Int?

    func validate() throws {
        guard batch > 0, steps > 0 else { throw ValidationError("--batch and --steps must be positive") }
        if let chunkPixels, chunkPixels < 0 { throw ValidationError("--chunk-pixels must be 0 or more, got \(chunkPixels)") }
        if let t = winogradTile, t != 2 && t != 4 { throw ValidationError("--winograd-tile must be 2 or 4, got \(t)") }
        guard !threadCounts.isEmpty else { throw ValidationError("--threads must list positive integers, e.g. 1,2") }
        var g = Generator(seed: 0)
        for name in modelNames {
            do { _ = try ModelZoo.make(name, classes: 10, generator: &g) } catch {
                throw ValidationError("--models: \(error)")
            }
        }
    }

    var modelNames: [String] { models.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
    var threadCounts: [Int] { threads.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.filter { $0 > 0 } }

    func run() throws {
        winogradTileOverride = winogradTile
        if let chunkPixels { inferenceChunkPixels = chunkPixels }
        var results: [(String, Double)] = []
        func report(_ key: String, _ value: Double, _ label: String) {
            results.append((key, value))
            if !format.json { print(label.padding(toLength: 60, withPad: " ", startingAt: 0) + String(format: "%10.1f", value)) }
        }
        for t in threadCounts {
            report("sgemm_gflops_t\(t)", measureSgemmGFLOPS(threads: t), "sgemm 1024³ GFLOP/s, \(t) thread(s)")
        }
        for name in modelNames {
            for t in threadCounts {
                Threads.set(t)
                if only != .inference {
                    let (train, split) = try measureTraining(name, threads: t)
                    report("\(name)_train_ips_t\(t)", train, "\(name) train images/s, batch \(batch), \(t) thread(s)")
                    for (key, label, share) in split where share > 0 || key != Profiler.Part.chunkedBlocks.key {
                        report("\(name)_\(key)_share_t\(t)", share * 100, "  % of the step: \(label)")
                    }
                }
                if only != .training {
                    let (infer, inferSplit) = try measureInference(name)
                    report("\(name)_infer_ips_t\(t)", infer, "\(name) inference images/s, batch \(batch), \(t) thread(s)")
                    for (key, label, share) in inferSplit where share > 0.0005 {
                        report("\(name)_infer_\(key)_share_t\(t)", share * 100, "  % of inference: \(label)")
                    }
                }
                if compareFusion && only != .training {
                    inferenceFusionEnabled = false
                    defer { inferenceFusionEnabled = true }
                    report("\(name)_infer_ips_t\(t)_unfused", try measureInference(name).0,
                           "\(name) inference images/s, unfused, \(t) thread(s)")
                }
                if compareChunking && only != .training {
                    let saved = inferenceChunkPixels
                    inferenceChunkPixels = 0
                    defer { inferenceChunkPixels = saved }
                    report("\(name)_infer_ips_t\(t)_whole_batch", try measureInference(name).0,
                           "\(name) inference images/s, blocks on the whole batch, \(t) thread(s)")
                }
                if compareDispatch && t > 1 {
                    Threads.usesPool = false
                    defer { Threads.usesPool = true }
                    try measureBoth(name, t, key: "dispatch", label: "Dispatch threads")
                }
                if compareDepthwise {
                    depthwiseDirectEnabled = false
                    defer { depthwiseDirectEnabled = true }
                    try measureBoth(name, t, key: "pergroup", label: "per-group products")
                }
            }
        }
        if format.json { try printJSON(Dictionary(uniqueKeysWithValues: results)) }

        /// A baseline's training and inference images/s (those `--only` keeps), reported under `key`.
        func measureBoth(_ name: String, _ t: Int, key: String, label: String) throws {
            if only != .inference {
                report("\(name)_train_ips_t\(t)_\(key)", try measureTraining(name, threads: t).0,
                       "\(name) train images/s, \(label), \(t) thread(s)")
            }
            if only != .training {
                report("\(name)_infer_ips_t\(t)_\(key)", try measureInference(name).0,
                       "\(name) inference images/s, \(label), \(t) thread(s)")
            }
        }
    }

    func makeModel(_ name: String) throws -> (Classifier, Tensor, [Int]) {
        var g = Generator(seed: 1)
        let model = try ModelZoo.make(name, classes: 100, generator: &g)
        let x = Tensor.randn([batch, 32, 32, 3], generator: &g)
        let labels = (0..<batch).map { _ in g.int(below: 100) }
        return (model, x, labels)
    }

    /// Images/s of forward + backward + SGD step, and the share of that time in each profiled part and in the
    /// rest: (key, label, share).
    func measureTraining(_ name: String, threads: Int) throws -> (Double, [(String, String, Double)]) {
        let (model, x, labels) = try makeModel(name)
        let opt = SGD(parameters: model.namedParameters(), lr: 0.01, momentum: 0.9, weightDecay: 5e-4)
        func step() {
            opt.zeroGrad()
            crossEntropy(model(x), labels: labels).backward()
            opt.step()
        }
        step()
        Profiler.reset()
        Profiler.isEnabled = true
        defer { Profiler.isEnabled = false }
        let t0 = Profiler.now()
        for _ in 0..<steps { step() }
        let elapsed = Profiler.now() - t0
        return (Double(batch * steps) / elapsed, split(elapsed))
    }

    /// The profiler's parts as shares of `elapsed`, and the rest: (key, label, share).
    func split(_ elapsed: Double) -> [(String, String, Double)] {
        var split = Profiler.Part.allCases.map { ($0.key, $0.label, Profiler.seconds[$0.rawValue] / elapsed) }
        split.append(("other", "the rest (pooling, classifier, loss, tape)", 1 - split.reduce(0) { $0 + $1.2 }))
        return split
    }

    /// Images/s of an eval-mode forward pass without the tape, and its split as `measureTraining`'s.
    func measureInference(_ name: String) throws -> (Double, [(String, String, Double)]) {
        let (model, x, _) = try makeModel(name)
        model.eval()
        return withoutGradients {
            _ = model(x)
            Profiler.reset()
            Profiler.isEnabled = true
            defer { Profiler.isEnabled = false }
            let t0 = Profiler.now()
            for _ in 0..<steps { _ = model(x) }
            let elapsed = Profiler.now() - t0
            return (Double(batch * steps) / elapsed, split(elapsed))
        }
    }
}
