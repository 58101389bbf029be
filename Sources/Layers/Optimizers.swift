// Optimisers as torch.optim defines them, and learning-rate schedules.
//   SGD:   g ← ∇ + λ·w;  b ← g (first step) or μ·b + (1 − dampening)·g;  g ← g + μ·b (Nesterov) or b;  w ← w − lr·g
//   Adam:  g ← ∇ + λ·w (L2);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  at step t (per parameter, from 1)
//          w ← w − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//   AdamW: w ← w·(1 − lr·λ) (decoupled weight decay), then the Adam step with g = ∇
// Parameter groups give a subset its own lr multiplier and λ (torch's param_groups). Every optimiser's state is named
// tensors per parameter (torch's state_dict names: momentum_buffer; exp_avg, exp_avg_sq, step) for checkpoints.
import Foundation
import Tensors

/// Parameters that share optimiser settings: a multiplier of the optimiser's learning rate and a weight decay
/// (torch.optim's param_groups with their own lr and weight_decay).
public struct ParameterGroup {
    public var parameters: [(String, Parameter)]
    public var lrScale: Float
    /// nil: the optimiser's weight decay.
    public var weightDecay: Float?
    public init(_ parameters: [(String, Parameter)], lrScale: Float = 1, weightDecay: Float? = nil) {
        precondition(lrScale >= 0 && (weightDecay ?? 0) >= 0, "ParameterGroup: lrScale and weightDecay must be ≥ 0")
        self.parameters = parameters; self.lrScale = lrScale; self.weightDecay = weightDecay
    }
}

/// An optimiser over named parameters in groups. Its state (momentum buffers, moments, step counts) is a set of
/// named tensors per parameter, read and restored whole for an exact resume.
public protocol Optimizer: AnyObject {
    /// Every trainable parameter it updates, in group order.
    var parameters: [(String, Parameter)] { get }
    /// The learning rate (a group's is this times its `lrScale`).
    var lr: Float { get set }
    /// Applies one update to every parameter that has a gradient.
    func step()
    /// The state of parameter `name` as (state name, tensor) pairs, empty before its first step.
    func state(of name: String) -> [(String, Tensor)]
    /// Restores the state of parameter `name` (the pairs `state(of:)` gave); forgets it when empty.
    func setState(of name: String, _ state: [(String, Tensor)]) throws
    /// Sets parameter `name`'s multiplier of the learning rate (0 holds it still, whatever its gradient).
    func setLRScale(_ scale: Float, of name: String)
}

extension Optimizer {
    /// Drops every parameter's gradient.
    public func zeroGrad() { for (_, p) in parameters { p.value.zeroGrad() } }
}

/// A state tensor that does not fit the optimiser.
public struct OptimizerStateError: Error, CustomStringConvertible {
    public let description: String
}

/// The per-parameter settings of grouped parameters, flattened (trainable parameters only).
struct GroupedParameters {
    var names: [String] = [], parameters: [Parameter] = [], lrScales: [Float] = [], weightDecays: [Float] = []
    init(_ groups: [ParameterGroup], weightDecay: Float) {
        var seen = Set<String>()
        for g in groups {
            for (name, p) in g.parameters where p.isTrainable {
                precondition(seen.insert(name).inserted, "optimiser: parameter '\(name)' is in two groups")
                names.append(name); parameters.append(p); lrScales.append(g.lrScale); weightDecays.append(g.weightDecay ?? weightDecay)
            }
        }
    }
    var named: [(String, Parameter)] { Array(zip(names, parameters)) }
    mutating func setLRScale(_ scale: Float, of name: String) {
        precondition(scale >= 0, "optimiser: an lr multiplier must be ≥ 0, got \(scale)")
        guard let k = names.firstIndex(of: name) else { preconditionFailure("optimiser: no parameter '\(name)'") }
        lrScales[k] = scale
    }
    func shape(of name: String) -> [Int]? { names.firstIndex(of: name).map { parameters[$0].value.shape } }
}

public final class SGD: Optimizer {
    var grouped: GroupedParameters
    public var parameters: [(String, Parameter)] { grouped.named }
    public var lr: Float
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    /// Momentum buffers keyed by parameter name (absent until a parameter's first step).
    public var momentumBuffers: [String: Tensor] = [:]

    public convenience init(parameters: [(String, Parameter)], lr: Float, momentum: Float = 0, dampening: Float = 0,
                            weightDecay: Float = 0, nesterov: Bool = false) {
        self.init(groups: [ParameterGroup(parameters)], lr: lr, momentum: momentum, dampening: dampening,
                  weightDecay: weightDecay, nesterov: nesterov)
    }

    /// `weightDecay` applies to groups that give none.
    public init(groups: [ParameterGroup], lr: Float, momentum: Float = 0, dampening: Float = 0,
                weightDecay: Float = 0, nesterov: Bool = false) {
        precondition(!nesterov || (momentum > 0 && dampening == 0), "SGD: Nesterov momentum requires momentum > 0 and zero dampening")
        grouped = GroupedParameters(groups, weightDecay: weightDecay)
        self.lr = lr; self.momentum = momentum; self.dampening = dampening
        self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step() { Profiler.measure(.optimizer) { update() } }
    public func setLRScale(_ scale: Float, of name: String) { grouped.setLRScale(scale, of: name) }

    /// One update of every parameter that has a gradient.
    func update() {
        for (k, name) in grouped.names.enumerated() {
            let p = grouped.parameters[k]
            guard let grad = p.value.grad else { continue }
            let n = p.value.count, w = p.value.data, g = grad.data
            let lr = self.lr * grouped.lrScales[k], wd = grouped.weightDecays[k], mu = momentum, damp = dampening
            if mu == 0 {
                for i in 0..<n { w[i] -= lr * (g[i] + wd * w[i]) }
                continue
            }
            if let buf = momentumBuffers[name] {
                let b = buf.data
                for i in 0..<n {
                    let d = g[i] + wd * w[i]
                    b[i] = mu * b[i] + (1 - damp) * d
                    w[i] -= lr * (nesterov ? d + mu * b[i] : b[i])
                }
            } else {
                let buf = Tensor(zeros: p.value.shape)
                let b = buf.data
                for i in 0..<n {
                    let d = g[i] + wd * w[i]
                    b[i] = d
                    w[i] -= lr * (nesterov ? d + mu * b[i] : b[i])
                }
                momentumBuffers[name] = buf
            }
        }
    }

    public func state(of name: String) -> [(String, Tensor)] {
        momentumBuffers[name].map { [("momentum_buffer", $0)] } ?? []
    }

    public func setState(of name: String, _ state: [(String, Tensor)]) throws {
        guard let shape = grouped.shape(of: name) else { throw OptimizerStateError(description: "SGD has no parameter '\(name)'") }
        momentumBuffers[name] = nil
        for (key, t) in state {
            guard key == "momentum_buffer", t.shape == shape else {
                throw OptimizerStateError(description: "SGD state '\(name)/\(key)' \(t.shape) does not fit (momentum_buffer \(shape))")
            }
            momentumBuffers[name] = t
        }
    }
}

/// Adam (torch.optim.Adam, amsgrad off) or, with `decoupled`, AdamW (torch.optim.AdamW). Its state per parameter name:
/// the first and second moments and the number of steps taken, all restored with a checkpoint for an exact resume.
public final class Adam: Optimizer {
    var grouped: GroupedParameters
    public var parameters: [(String, Parameter)] { grouped.named }
    public var lr: Float
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float, decoupled: Bool
    /// exp_avg and exp_avg_sq by parameter name (absent until a parameter's first step).
    public var firstMoments: [String: Tensor] = [:], secondMoments: [String: Tensor] = [:]
    /// Steps taken by each parameter.
    public var steps: [String: Int] = [:]

    /// torch's defaults: Adam weight decay 0, AdamW 0.01.
    public convenience init(parameters: [(String, Parameter)], lr: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8,
                            weightDecay: Float? = nil, decoupled: Bool = false) {
        self.init(groups: [ParameterGroup(parameters)], lr: lr, betas: betas, eps: eps, weightDecay: weightDecay, decoupled: decoupled)
    }

    public init(groups: [ParameterGroup], lr: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8,
                weightDecay: Float? = nil, decoupled: Bool = false) {
        precondition(lr >= 0 && eps >= 0 && (0..<1).contains(betas.0) && (0..<1).contains(betas.1),
                     "Adam: lr and eps must be ≥ 0 and betas in [0, 1), got lr \(lr), eps \(eps), betas \(betas)")
        let wd = weightDecay ?? (decoupled ? 0.01 : 0)
        grouped = GroupedParameters(groups, weightDecay: wd)
        self.lr = lr; self.beta1 = betas.0; self.beta2 = betas.1; self.eps = eps
        self.weightDecay = wd; self.decoupled = decoupled
    }

    public func step() { Profiler.measure(.optimizer) { update() } }
    public func setLRScale(_ scale: Float, of name: String) { grouped.setLRScale(scale, of: name) }

    /// One update of every parameter that has a gradient.
    func update() {
        for (k, name) in grouped.names.enumerated() {
            let p = grouped.parameters[k]
            guard let grad = p.value.grad else { continue }
            let n = p.value.count, w = p.value.data, g = grad.data
            let m = (firstMoments[name] ?? { let t = Tensor(zeros: p.value.shape); firstMoments[name] = t; return t }()).data
            let v = (secondMoments[name] ?? { let t = Tensor(zeros: p.value.shape); secondMoments[name] = t; return t }()).data
            let t = (steps[name] ?? 0) + 1
            steps[name] = t
            let lr = self.lr * grouped.lrScales[k]
            let b1 = beta1, b2 = beta2, wd = grouped.weightDecays[k], l2 = decoupled ? 0 : wd, eps = self.eps
            let stepSize = lr / (1 - Foundation.pow(b1, Float(t)))
            let root = (1 - Foundation.pow(b2, Float(t))).squareRoot()
            if decoupled && wd != 0 { let f = 1 - lr * wd; for i in 0..<n { w[i] *= f } }
            for i in 0..<n {
                let d = g[i] + l2 * w[i]
                m[i] = b1 * m[i] + (1 - b1) * d
                v[i] = b2 * v[i] + (1 - b2) * d * d
                w[i] -= stepSize * m[i] / (v[i].squareRoot() / root + eps)
            }
        }
    }

    /// exp_avg, exp_avg_sq and step (a one-element tensor: exact up to 2²⁴ steps).
    public func state(of name: String) -> [(String, Tensor)] {
        guard let m = firstMoments[name], let v = secondMoments[name], let t = steps[name] else { return [] }
        return [("exp_avg", m), ("exp_avg_sq", v), ("step", Tensor(shape: [1], values: [Float(t)]))]
    }

    public func setState(of name: String, _ state: [(String, Tensor)]) throws {
        guard let shape = grouped.shape(of: name) else { throw OptimizerStateError(description: "Adam has no parameter '\(name)'") }
        firstMoments[name] = nil; secondMoments[name] = nil; steps[name] = nil
        guard !state.isEmpty else { return }
        let s = Dictionary(state, uniquingKeysWith: { a, _ in a })
        guard state.count == 3, let m = s["exp_avg"], let v = s["exp_avg_sq"], let t = s["step"],
              m.shape == shape, v.shape == shape, t.count == 1, t.item >= 1, t.item == t.item.rounded() else {
            throw OptimizerStateError(description: "Adam state of '\(name)' must be exp_avg and exp_avg_sq \(shape) and a whole step ≥ 1; got \(state.map { "\($0.0) \($0.1.shape)" })")
        }
        firstMoments[name] = m; secondMoments[name] = v; steps[name] = Int(t.item)
    }
}

/// Learning rate as a function of training progress in (fractional) epochs.
public protocol LRSchedule {
    func lr(epoch: Double) -> Float
}

/// lr = base · γ^(number of milestones ≤ epoch), as MultiStepLR stepped once per epoch.
public struct MultiStepLR: LRSchedule {
    public let base: Float, milestones: [Int], gamma: Float
    public init(base: Float, milestones: [Int], gamma: Float = 0.1) {
        self.base = base; self.milestones = milestones.sorted(); self.gamma = gamma
    }
    public func lr(epoch: Double) -> Float {
        let passed = milestones.filter { Double($0) <= epoch.rounded(.down) }.count
        return base * Foundation.pow(gamma, Float(passed))
    }
}

/// lr = min + (base − min)·(1 + cos(π·epoch/total))/2, as CosineAnnealingLR stepped once per epoch.
/// With `perStep`, the cosine follows the fractional epoch (CosineAnnealingLR stepped every iteration over
/// epochs × steps), reaching `minLR` at the end of training rather than holding the last epoch's value.
public struct CosineLR: LRSchedule {
    public let base: Float, totalEpochs: Int, minLR: Float, perStep: Bool
    public init(base: Float, totalEpochs: Int, minLR: Float = 0, perStep: Bool = false) {
        precondition(totalEpochs > 0, "CosineLR: totalEpochs must be positive")
        self.base = base; self.totalEpochs = totalEpochs; self.minLR = minLR; self.perStep = perStep
    }
    public func lr(epoch: Double) -> Float {
        let e = min(perStep ? epoch : epoch.rounded(.down), Double(totalEpochs))
        return minLR + (base - minLR) * Float((1 + cos(Double.pi * e / Double(totalEpochs))) / 2)
    }
}

/// Warm-up in front of another schedule, over `warmupEpochs`, then `inner` applies unchanged:
///   linear: the factor rises from `startFactor` to 1 over fractional epochs (it ramps every step);
///   stepwise: lr = base·(e + 1)/W in whole epoch e < W, held through the epoch (CSS's official
///             `adjust_learning_rate_warmup`: 0.2, 0.4, …, 1 × lr over 5 epochs), where base is `inner`'s value.
public struct WarmupLR: LRSchedule {
    public let inner: LRSchedule, warmupEpochs: Double, startFactor: Float, stepwise: Bool
    public init(_ inner: LRSchedule, warmupEpochs: Double, startFactor: Float = 0.1, stepwise: Bool = false) {
        self.inner = inner; self.warmupEpochs = warmupEpochs; self.startFactor = startFactor; self.stepwise = stepwise
    }
    public func lr(epoch: Double) -> Float {
        guard epoch < warmupEpochs else { return inner.lr(epoch: epoch) }
        if stepwise { return inner.lr(epoch: epoch) * Float((epoch.rounded(.down) + 1) / warmupEpochs.rounded(.up)) }
        let t = Float(epoch / warmupEpochs)
        return inner.lr(epoch: epoch) * (startFactor + (1 - startFactor) * t)
    }
}
