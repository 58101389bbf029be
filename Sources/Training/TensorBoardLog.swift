// What a run shows in TensorBoard: the one owner of the tag names. Rank 0 writes OUTPUT/tensorboard/; every
// scalar's step is the global training step after which it holds (an epoch's figures at its last step).
//   loss/peer<P>              peer P's training loss at each step (mean over data-parallel replicas)
//   terms/<name>              each term of the cohort's objective at each step
//   lr                        the learning rate of each step
//   train_top1/peer<P>, train_top1/<teacher>             per epoch, on the epoch's training batches
//   test_top1/peer<P>, test_top1/<teacher>, test_top1/<prediction>   per evaluated epoch (CSS's branches too)
//   val_top1/...              the same on the validation split (dataset.validation)
//   images_per_second, communication_share               per epoch (the share of the epoch's wall time in
//                                                         collectives, on rank 0)
// A resumed run starts a new file with a session start at the first step it repeats, so TensorBoard drops the
// steps a killed run wrote after its last checkpoint.
import Foundation
import TensorFiles

final class TensorBoardLog {
    let writer: EventFileWriter

    init(run: RunDirectory, resumingAtStep step: Int?) throws {
        writer = try EventFileWriter(directory: run.tensorboard)
        if let s = step { writer.addSessionStart(step: s + 1) }
        try writer.flush()
    }

    /// A tag component from a display name ("aggregated ensemble" → "aggregated_ensemble").
    static func tagName(_ name: String) -> String {
        String(name.map { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." ? $0 : "_" })
    }

    /// The scalars of one step: each peer's loss, each term, the learning rate.
    func addStep(_ step: Int, peerLoss: [Double], terms: [(String, Double)], lr: Float) {
        let scalars = peerLoss.enumerated().map { Scalar("loss/peer\($0.offset)", Float($0.element)) }
            + terms.map { Scalar("terms/" + Self.tagName($0.0), Float($0.1)) } + [Scalar("lr", lr)]
        writer.add(scalars, step: step)
    }

    /// An epoch's figures, at the global step that ends it; then everything goes to disk.
    func addEpoch(_ m: EpochMetrics, step: Int) throws {
        var s: [Scalar] = []
        func add(_ split: String, _ peers: [Float]?, teacher: Float?, extra: [String: Float]?) {
            for (p, v) in (peers ?? []).enumerated() { s.append(Scalar("\(split)_top1/peer\(p)", v)) }
            if let name = m.teacher, let v = teacher { s.append(Scalar("\(split)_top1/" + Self.tagName(name), v)) }
            for (name, v) in (extra ?? [:]).sorted(by: { $0.key < $1.key }) { s.append(Scalar("\(split)_top1/" + Self.tagName(name), v)) }
        }
        add("train", m.trainTop1, teacher: m.teacherTrainTop1, extra: nil)
        add("test", m.testTop1, teacher: m.teacherTestTop1, extra: m.extraTestTop1)
        add("val", m.valTop1, teacher: m.teacherValTop1, extra: m.extraValTop1)
        s.append(Scalar("images_per_second", Float(m.imagesPerSecond)))
        if let seconds = m.seconds, seconds > 0 { s.append(Scalar("communication_share", Float(m.communicationSeconds / seconds))) }
        writer.add(s, step: step)
        try writer.flush()
    }
}
