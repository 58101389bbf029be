// `distill bench conv`: GFLOP/s of the convolution kernels on the distinct layer shapes of a CIFAR ResNet.
import ArgumentParser
import Foundation
import Training
import Layers
import Models
import Tensors

struct BenchConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv",
        abstract: "Measures convolution forward and backward GFLOP/s on resnet20's layer shapes (or --shapes).",
        discussion: """
        For each distinct (channels, size, stride) of resnet20 at the given batch, times the forward pass and the
        backward pass (data and weight gradients together) and reports GFLOP/s counted as direct convolution
        (2·N·OH·OW·Cout·Cin·k² per product). Figures above the sgemm peak mean fewer multiplications were done.
        """)

    @Option(help: "Batch size.")
    var batch = 128

    @Option(help: "Timed repetitions per shape.")
    var repeats = 3

    @Option(help: "Kernel threads.")
    var threads = 1

    @Option(help: "Output pixels per im2col chunk (default: the engine's setting).")
    var chunk: Int?

    @Option(help: "Tiles per Winograd chunk (default: the engine's setting).")
    var winogradTiles: Int?

    @Option(help: "Padding floats between Winograd matrices (default: the engine's setting).")
    var winogradPadding: Int?

    @Flag(help: "Use im2col + sgemm for every layer (no Winograd).")
    var noWinograd = false

    @Option(help: "Winograd output tile for every layer: 2 (F(2×2, 3×3)) or 4 (F(4×4, 3×3)); default: chosen per layer.")
    var winogradTile: Int?

    @Option(help: "Layer shapes to measure instead of resnet20's, comma-separated Cin:Cout:H:kernel:stride (e.g. 3:64:32:3:1,256:512:4:3:1).")
    var shapes: String?

    /// (Cin, Cout, H, kernel, stride) of each measured layer: --shapes, else resnet20's distinct convolutions.
    func layerShapes() throws -> [(Int, Int, Int, Int, Int)] {
        guard let shapes else {
            return [(16, 16, 32, 3, 1), (16, 32, 32, 3, 2), (32, 32, 16, 3, 1), (32, 64, 16, 3, 2), (64, 64, 8, 3, 1), (16, 32, 32, 1, 2)]
        }
        return try shapes.split(separator: ",").map { item in
            let v = item.split(separator: ":").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard v.count == 5, v.allSatisfy({ $0 > 0 }) else {
                throw ValidationError("--shapes: '\(item)' is not Cin:Cout:H:kernel:stride (positive integers; padding is kernel / 2)")
            }
            return (v[0], v[1], v[2], v[3], v[4])
        }
    }

    func validate() throws {
        _ = try layerShapes()
        if let t = winogradTile, t != 2 && t != 4 { throw ValidationError("--winograd-tile must be 2 or 4, got \(t)") }
    }

    @OptionGroup var format: OutputFormat

    func run() throws {
        Threads.set(threads)
        if let c = chunk { convChunkPixels = max(1, c) }
        if let t = winogradTiles { winogradChunkTiles = max(1, t) }
        if let p = winogradPadding { winogradPad = max(0, p) }
        if noWinograd { winogradEnabled = false }
        winogradTileOverride = winogradTile
        let shapes = try layerShapes()
        var g = Generator(seed: 1)
        var results: [(String, Double)] = []
        var totalFlops = 0.0, totalSeconds = 0.0
        for (ci, co, h, k, s) in shapes {
            let x = Tensor.randn([batch, h, h, ci], generator: &g, requiresGrad: true)
            let w = Tensor.randn([co, ci, k, k], std: 0.1, generator: &g, requiresGrad: true)
            let geometry = ConvGeometry(input: x.shape, weight: w.shape, stride: s, padding: k / 2, groups: 1)
            let flops = geometry.forwardFlops
            var fwd = Double.infinity, bwd = Double.infinity
            for _ in 0...repeats {
                x.zeroGrad(); w.zeroGrad()
                let t0 = Profiler.now()
                let y = conv2d(x, weight: w, stride: s, padding: k / 2)
                let t1 = Profiler.now()
                y.backward(gradient: y)
                let t2 = Profiler.now()
                fwd = min(fwd, t1 - t0); bwd = min(bwd, t2 - t1)
            }
            let key = "c\(ci)_\(co)_h\(h)_k\(k)_s\(s)"
            results.append(("\(key)_fwd_gflops", flops / fwd / 1e9))
            results.append(("\(key)_bwd_gflops", 2 * flops / bwd / 1e9))
            totalFlops += 3 * flops; totalSeconds += fwd + bwd
            if !format.json {
                print(String(format: "%-28@ forward %6.1f GFLOP/s   backward %6.1f GFLOP/s", key as NSString,
                             flops / fwd / 1e9, 2 * flops / bwd / 1e9))
            }
        }
        results.append(("all_gflops", totalFlops / totalSeconds / 1e9))
        if format.json {
            try printJSON(Dictionary(uniqueKeysWithValues: results))
        } else {
            print(String(format: "all shapes, forward + backward: %.1f GFLOP/s", totalFlops / totalSeconds / 1e9))
        }
    }
}
