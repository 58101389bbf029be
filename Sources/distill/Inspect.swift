// `distill inspect FILE`: what a checkpoint holds.
import ArgumentParser
import Foundation
import TensorFiles

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lists the tensors of a safetensors checkpoint: names, dtypes, shapes and the parameter count.",
        discussion: "The file is fully validated first; a malformed file is reported with the reason (exit code 1).")

    @Argument(help: "A .safetensors file.")
    var file: String

    func run() throws {
        let (tensors, metadata) = try SafeTensors.read(file)
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { print("metadata \(k) = \(v)") }
        var total = 0, buffers = 0
        for (name, t) in tensors {
            let n = t.shape.reduce(1, *)
            let isBuffer = name.hasSuffix("running_mean") || name.hasSuffix("running_var") || name.hasSuffix("num_batches_tracked")
            if isBuffer { buffers += n } else { total += n }
            print("\(name.padding(toLength: max(44, name.count + 1), withPad: " ", startingAt: 0))\(t.dtype.rawValue.padding(toLength: 6, withPad: " ", startingAt: 0))\(t.shape)")
        }
        print("\(tensors.count) tensors; \(total) parameters (plus \(buffers) buffer values)")
        let uncounted = SafeTensors.batchNormsWithoutCount(tensors.map(\.0))
        if !uncounted.isEmpty {
            print("\(uncounted.count) batch norm\(uncounted.count == 1 ? " has" : "s have") no num_batches_tracked (first: \(uncounted[0])num_batches_tracked); loading keeps the model's count, as torch's load_state_dict does")
        }
    }
}
