// Zhang, Xiang, Hospedales & Lu, CVPR 2018, "Deep Mutual Learning".
//
// A cohort of P peers learns together; each peer i minimises its cross-entropy plus the mean KL divergence from
// every other peer's predictions to its own:
//   L_i = CE(y, z_i) + 1/(P − 1) · Σ_{j ≠ i} T² · KL(softmax(z_j / T) ‖ softmax(z_i / T))
// with the other peers' logits detached (they are targets only, exchanged with a plain allgather). The
// official code is TensorFlow with T = 1, the default here; PyTorch re-implementations use T = 2–3.
// Ours by choice: the paper's mean over the others and one simultaneous update; the official TensorFlow code
// (YingZhangDUT/Deep-Mutual-Learning) sums the KL terms and updates the peers one after another.
// Teacher reported in metrics: the ensemble, the mean of the peers' logits.
import Models
import Tensors

public final class DML: DistillationMethod {
    public static let spec = MethodSpec(
        name: "dml", officialEvaluation: "each peer's top-1 (the TensorFlow code; PyTorch re-implementations report the best epoch)", summary: "Zhang et al. 2018: CE + mean over the other peers of T²·KL(p_j ‖ p_i), others detached",
        keys: [.temperature(1)], dataParallel: true) { c, _ in DML(temperature: c.options.number("temperature")) }

    public let name = "dml"
    public let temperature: Float
    public init(temperature: Float = 1) { self.temperature = temperature }
    public var teacherName: String? { "ensemble" }
    public var termNames: [String] { ["ce", "kl"] }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("dml needs labels") }
        let logits = cohort.logits(input.images[0])
        let all = try cohort.gatherDetached(logits)
        let P = cohort.peers
        var total: Tensor?, losses: [Float] = [], ce: Float = 0, kl: Float = 0
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let c = crossEntropy(logits[k], labels: labels)
            var loss = c
            ce += c.item
            if P > 1 {
                var mutual: Tensor?
                for j in 0..<P where j != p {
                    let d = klDivergence(student: logits[k], teacher: all[j], temperature: temperature)
                    mutual = mutual.map { $0 + d } ?? d
                }
                let m = mutual! * (1 / Float(P - 1))
                kl += m.item
                loss = loss + m
            }
            total = total.map { $0 + loss } ?? loss
            losses.append(loss.item)
        }
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses, terms: ["ce": ce, "kl": kl],
                          teacherLogits: meanLogits(all))
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let logits = cohort.logits(x)
        return Predictions(peers: logits, teacher: meanLogits(try cohort.gatherDetached(logits)))
    }
}
