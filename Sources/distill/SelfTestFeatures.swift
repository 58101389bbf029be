// `distill selftest feature-methods`: every offline feature method on one student trained data-parallel gives
// the one-process gradient. Each rank first computes one step on the whole global batch alone, then its shard of
// the same batch with the other ranks (the method's cross-batch terms reading the other shards); the mean of
// the ranks' gradients (the trainer's `.mean` sync) must equal the one-process gradient, and memory banks the
// one-process banks. The student and adapters run in evaluation mode, so batch norm does not depend on the shard
// (the trainer's per-rank batch statistics are a separate, documented policy).
import ArgumentParser
import Collectives
import Datasets
import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors

struct SelfTestFeatureMethods: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "feature-methods",
        abstract: "Offline feature methods on R data-parallel ranks against one process (run under mpirun).")

    @Flag(help: "Fingerprint every collective.") var checkCollectives = false

    /// Each method with the keys that make it small enough to check (and its variants).
    static let cases: [(name: String, keys: [String: OptionValue])] = [
        ("fitnets", [:]), ("at", [:]), ("dkd", ["warmup_epochs": .int(0)]),
        ("crd", ["nce_k": .int(10)]), ("msdcrd", [:]), ("msdcrd", ["scales": .string("1,2"), "feature_wise": .bool(false)]),
        ("avatar", [:]), ("avatar", ["base": .string("mgd"), "avatars": .int(2), "feat_weight": .number(1e-3)]),
        ("kd", [:]),
    ]

    func run() throws {
        if checkCollectives { CollectiveOptions.checkCollectives = true }
        let world = try MPICommunicator.world()
        let R = world.size, me = world.rank
        let n = 12, classes = 5, side = 16
        // Every rank writes the same teacher to its own file.
        var tg = Generator(seed: 3)
        let teacherModel = try ModelZoo.make("resnet8x4", classes: classes, inChannels: 1, generator: &tg)
        let teacherPath = NSTemporaryDirectory() + "distill-selftest-teacher-\(ProcessInfo.processInfo.processIdentifier).safetensors"
        try teacherModel.saveSafeTensors(to: teacherPath)
        defer { try? FileManager.default.removeItem(atPath: teacherPath) }
        let trainLabels = (0..<40).map { ($0 * 7) % classes }
        let items = [3, 17, 8, 30, 1, 22, 39, 11, 5, 26, 14, 33]
        let labels = items.map { trainLabels[$0] }
        let images = randomImages([n, side, side, 1], seed: 5)
        let shard = EpochSampler.shard(size: n, replica: me, of: R)
        var failures: [String] = []
        let self1 = try world.split(color: me, key: 0)

        for (name, keys) in Self.cases {
            let spec = MethodRegistry.spec(name)!
            let options = try spec.resolve(keys.merging(["teacher_model": .string("resnet8x4"), "teacher_checkpoint": .string(teacherPath)]) { $1 })
            let label = name + (keys.isEmpty ? "" : " \(keys.keys.sorted().map { "\($0)=\(keys[$0]!)" }.joined(separator: ","))")
            // One run: a fresh method and student; returns the mean gradient over the ranks and the extra state.
            func step(_ images: Tensor, _ items: [Int], _ labels: [Int], replicas: Communicator?) throws -> (loss: Double, grads: [Float], extra: [Float]) {
                let placement = try PeerPlacement(peers: 1, ranks: 1, rank: 0)
                let context = MethodContext(models: ["resnet8"], placement: placement, classes: classes, inChannels: 1, seed: 9,
                                            options: options, trainLabels: trainLabels, imageSize: (side, side))
                var g = Generator(seed: 1)
                let method = try spec.make(context, &g)
                var sg = Generator(seed: 11)
                let student = try ModelZoo.make("resnet8", classes: classes, inChannels: 1, generator: &sg)
                student.eval(); method.peerModule(0)?.eval()
                let cohort = Cohort(placement: placement, comm: self1, models: [student], stem: nil, replicaComm: replicas)
                let params = student.namedParameters().map(\.1.value) + (method.peerModule(0)?.namedParameters().map(\.1.value) ?? [])
                let input = StepInput(images: [images], labels: labels, epoch: 2, step: 7, indices: items)
                let objective = try method.step(input, cohort: cohort).objective
                objective.backward()
                var grads = params.flatMap { $0.grad?.array ?? [Float](repeating: 0, count: $0.count) }
                var loss = [Double(objective.item)]
                if let c = replicas {
                    try grads.withUnsafeMutableBufferPointer { try c.allReduce($0.baseAddress!, count: $0.count, op: .sum) }
                    grads = grads.map { $0 / Float(c.size) }
                    try c.allReduce(&loss, op: .sum); loss[0] /= Double(c.size)
                }
                method.afterStep(cohort: cohort, step: 8)
                let extra = method.peerExtraState(0)?.namedState().flatMap { $0.1.value.array } ?? []
                return (loss[0], grads, extra)
            }
            let alone = try step(images, items, labels, replicas: nil)
            let spread = try step(images.slice(axis: 0, shard), Array(items[shard]), Array(labels[shard]), replicas: world)
            if abs(alone.loss - spread.loss) > 1e-4 * max(1, abs(alone.loss)) {
                failures.append("\(label): objective \(spread.loss) on \(R) ranks vs \(alone.loss) in one process")
            }
            let (d, norm) = zip(alone.grads, spread.grads).reduce((0.0, 0.0)) { ($0.0 + Double($1.0 - $1.1) * Double($1.0 - $1.1), $0.1 + Double($1.0) * Double($1.0)) }
            if (d / max(norm, 1e-30)).squareRoot() > 1e-4 || norm == 0 {
                failures.append("\(label): gradient on \(R) ranks differs from one process by \((d / max(norm, 1e-30)).squareRoot()) relative (norm \(norm.squareRoot()))")
            }
            if zip(alone.extra, spread.extra).contains(where: { abs($0 - $1) > 1e-5 }) || alone.extra.count != spread.extra.count {
                failures.append("\(label): memory state on \(R) ranks differs from one process")
            }
        }
        if !failures.isEmpty {
            for f in failures { printError("rank \(me): FAIL \(f)") }
            throw ExitCode(1)
        }
        try world.barrier()
        if me == 0 { print("selftest feature-methods: ok (\(R) rank\(R == 1 ? "" : "s"), \(Self.cases.count) cases)") }
        MPICommunicator.finalize()
    }
}

/// Uniform values in [−1, 1) from `seed`.
func randomImages(_ shape: [Int], seed: UInt64) -> Tensor {
    var g = Generator(seed: seed)
    let t = Tensor(zeros: shape)
    for i in 0..<t.count { t.data[i] = g.uniform() * 2 - 1 }
    return t
}
