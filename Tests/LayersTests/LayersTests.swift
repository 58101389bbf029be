import Layers
import Tensors
import TestSupport
import XCTest

final class LayersTests: XCTestCase {
    func testStateDictNamesAndOrder() {
        var g = Generator(seed: 1)
        let seq = Sequential([Conv2d(3, 4, kernelSize: 3, padding: 1, bias: true, generator: &g), BatchNorm2d(4),
                              ReLU(), Linear(4, 2, generator: &g)])
        XCTAssertEqual(seq.namedState().map { $0.0 },
                       ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                        "1.num_batches_tracked", "3.weight", "3.bias"])
        XCTAssertEqual(seq.namedParameters().map { $0.0 }, ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"])
        XCTAssertEqual(seq.namedBuffers().map { $0.0 }, ["1.running_mean", "1.running_var", "1.num_batches_tracked"])
        XCTAssertEqual(seq.parameterCount, 4 * 3 * 9 + 4 + 4 + 4 + 8 + 2)
    }

    func testTrainEvalSwitchesBatchNormAndDropout() {
        let bn = BatchNorm2d(2)
        let seq = Sequential([bn, Dropout(p: 0.5)])
        seq.eval()
        XCTAssertFalse(bn.isTraining)
        let x = randomTensor([4, 2, 2, 2], seed: 2)
        assertClose(seq(x), x.affine(scale: 1 / (1 + 1e-5).squareRoot(), shift: 0), rtol: 1e-6,
                    "eval: running stats (0, 1) and dropout off")
        XCTAssertEqual(bn.numBatchesTracked.value.item, 0)
        seq.train()
        _ = seq(x)
        XCTAssertEqual(bn.numBatchesTracked.value.item, 1)
        XCTAssertNotEqual(bn.runningMean.value.array, [0, 0])
    }

    /// In training, a Sequential runs BatchNorm2d · ReLU as one batch norm with the ReLU in its pass: outputs,
    /// running statistics and every gradient equal the layers called one by one, bit for bit.
    func testSequentialFusesBatchNormAndReLUInTraining() {
        func make() -> Sequential {
            var g = Generator(seed: 11)
            return Sequential([Conv2d(3, 6, kernelSize: 3, padding: 1, generator: &g), BatchNorm2d(6), ReLU(),
                               Conv2d(6, 4, kernelSize: 1, generator: &g), BatchNorm2d(4), ReLU()])
        }
        let fused = make(), plain = make()
        let x = randomTensor([3, 5, 5, 3], seed: 12)
        let yFused = fused(x)
        let yPlain = plain.layers.reduce(x) { $1($0) }
        XCTAssertEqual(yFused.array, yPlain.array)
        (yFused * yFused).sum().backward()
        (yPlain * yPlain).sum().backward()
        for ((name, a), (_, b)) in zip(fused.namedParameters(), plain.namedParameters()) {
            XCTAssertEqual(a.value.grad?.array, b.value.grad?.array, name)
        }
        for ((name, a), (_, b)) in zip(fused.namedBuffers(), plain.namedBuffers()) {
            XCTAssertEqual(a.value.array, b.value.array, name)
        }
    }

    func testInitialisation() {
        var g = Generator(seed: 3)
        let conv = Conv2d(64, 128, kernelSize: 3, generator: &g)
        let w = conv.weight.value.array
        let std = (w.map { $0 * $0 }.reduce(0, +) / Float(w.count)).squareRoot()
        XCTAssertEqual(std, (2 / Float(128 * 9)).squareRoot(), accuracy: 0.002, "Kaiming normal, fan_out")
        let fc = Linear(256, 10, generator: &g)
        let bound = 1 / Float(256).squareRoot()
        XCTAssertTrue(fc.weight.value.array.allSatisfy { abs($0) <= bound })
        XCTAssertTrue(fc.bias!.value.array.allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan(fc.weight.value.array.map(abs).max()!, 0.9 * bound)
    }

    /// torch.optim.SGD, written out by hand for two steps.
    func testSGDMatchesTorchDefinition() {
        for (momentum, dampening, nesterov, wd) in [(Float(0), Float(0), false, Float(0)), (0.9, 0, false, 5e-4),
                                                   (0.9, 0, true, 1e-2), (0.5, 0.3, false, 0)] {
            let p = Parameter(Tensor(shape: [2], values: [1, -2]))
            let opt = SGD(parameters: [("w", p)], lr: 0.1, momentum: momentum, dampening: dampening,
                          weightDecay: wd, nesterov: nesterov)
            var w: [Float] = [1, -2]
            var buf: [Float]? = nil
            for step in 0..<3 {
                let grad: [Float] = [0.5 + Float(step), -1]
                p.value.grad = Tensor(shape: [2], values: grad)
                opt.step()
                for i in 0..<2 {
                    var d = grad[i] + wd * w[i]
                    if momentum != 0 {
                        if buf == nil { buf = [0, 0]; buf![0] = 0; buf![1] = 0 }
                        buf![i] = step == 0 ? d : momentum * buf![i] + (1 - dampening) * d
                        d = nesterov ? d + momentum * buf![i] : buf![i]
                    }
                    w[i] -= 0.1 * d
                }
                assertClose(p.value.array, w, rtol: 1e-6, atol: 1e-7, "momentum \(momentum) nesterov \(nesterov) step \(step)")
            }
        }
    }

    func testSchedules() {
        let ms = MultiStepLR(base: 0.1, milestones: [150, 180, 210])
        XCTAssertEqual(ms.lr(epoch: 149.9), 0.1, accuracy: 1e-7)
        XCTAssertEqual(ms.lr(epoch: 150), 0.01, accuracy: 1e-7)
        XCTAssertEqual(ms.lr(epoch: 215), 0.0001, accuracy: 1e-8)
        let cos = CosineLR(base: 0.1, totalEpochs: 100)
        XCTAssertEqual(cos.lr(epoch: 0), 0.1, accuracy: 1e-7)
        XCTAssertEqual(cos.lr(epoch: 50), 0.05, accuracy: 1e-6)
        XCTAssertEqual(cos.lr(epoch: 100), 0, accuracy: 1e-7)
        XCTAssertEqual(cos.lr(epoch: 99.5), cos.lr(epoch: 99), "stepped per epoch: holds the epoch's value")
        let perStep = CosineLR(base: 0.1, totalEpochs: 3, perStep: true)
        XCTAssertEqual(perStep.lr(epoch: 1.5), 0.05, accuracy: 1e-6)
        XCTAssertEqual(perStep.lr(epoch: 2.99), 0.1 * Float((1 + Foundation.cos(Double.pi * 2.99 / 3)) / 2), accuracy: 1e-7)
        XCTAssertLessThan(perStep.lr(epoch: 2.99), 1e-4)
        let warm = WarmupLR(cos, warmupEpochs: 5, startFactor: 0.2)
        XCTAssertEqual(warm.lr(epoch: 0), 0.02, accuracy: 1e-7)
        XCTAssertEqual(warm.lr(epoch: 2.5), cos.lr(epoch: 2.5) * 0.6, accuracy: 1e-7)
        XCTAssertEqual(warm.lr(epoch: 10), cos.lr(epoch: 10))
        // CSS's official warm-up: 1-based epoch e ≤ 5 trains at 0.1·e/5, held through the epoch, then the milestones.
        let css = WarmupLR(MultiStepLR(base: 0.1, milestones: [149, 224]), warmupEpochs: 5, stepwise: true)
        for (epoch, want) in [(0.0, 0.02), (0.99, 0.02), (1.0, 0.04), (4.5, 0.1), (5.0, 0.1), (149.0, 0.01), (224.0, 0.001)] as [(Double, Float)] {
            XCTAssertEqual(css.lr(epoch: epoch), want, accuracy: 1e-7, "epoch \(epoch)")
        }
    }

    /// Adam and AdamW against the update written out in Double from torch.optim's definitions: three steps on two
    /// parameters, one of which has no gradient on the second step (it keeps its moments and step count).
    func testAdamAndAdamWMatchTorchDefinitions() {
        for decoupled in [false, true] {
            let w = Parameter(Tensor(shape: [3], values: [0.5, -1.5, 2])), u = Parameter(Tensor(shape: [1], values: [3]))
            let opt = Adam(parameters: [("w", w), ("u", u)], lr: 0.1, betas: (0.8, 0.9), eps: 1e-3, weightDecay: 0.05, decoupled: decoupled)
            let grads: [[Double]] = [[1, -2, 0.5], [0.3, 0.3, -4], [-1, 0, 2]], ugrads: [Double?] = [2, nil, -1]
            var ew = [0.5, -1.5, 2.0], eu = 3.0
            var mw = [0.0, 0, 0], vw = [0.0, 0, 0], mu = 0.0, vu = 0.0, tw = 0, tu = 0
            func reference(_ x: inout Double, _ m: inout Double, _ v: inout Double, _ g: Double, _ t: Int) {
                let lr = 0.1, b1 = 0.8, b2 = 0.9, eps = 1e-3, wd = 0.05
                if decoupled { x *= 1 - lr * wd }
                let d = g + (decoupled ? 0 : wd * x)
                m = b1 * m + (1 - b1) * d
                v = b2 * v + (1 - b2) * d * d
                x -= lr / (1 - Foundation.pow(b1, Double(t))) * m / (v.squareRoot() / (1 - Foundation.pow(b2, Double(t))).squareRoot() + eps)
            }
            for k in 0..<3 {
                opt.zeroGrad()
                w.value.grad = Tensor(shape: [3], values: grads[k].map(Float.init))
                if let g = ugrads[k] { u.value.grad = Tensor(shape: [1], values: [Float(g)]) }
                opt.step()
                tw += 1
                for i in 0..<3 { reference(&ew[i], &mw[i], &vw[i], grads[k][i], tw) }
                if let g = ugrads[k] { tu += 1; reference(&eu, &mu, &vu, g, tu) }
                assertClose(w.value.array, ew.map(Float.init), rtol: 1e-5, atol: 1e-6, "\(decoupled ? "AdamW" : "Adam") step \(k + 1)")
                assertClose(u.value.array, [Float(eu)], rtol: 1e-5, atol: 1e-6, "\(decoupled ? "AdamW" : "Adam") u step \(k + 1)")
            }
            XCTAssertEqual(opt.steps["w"], 3)
            XCTAssertEqual(opt.steps["u"], 2, "a parameter without a gradient takes no step")
        }
        XCTAssertEqual(Adam(parameters: [], decoupled: true).weightDecay, 0.01, "AdamW's default weight decay")
    }

    /// Parameter groups: each group's parameters step as an optimiser of their own with lr × lrScale and the
    /// group's weight decay (or the optimiser's, when the group gives none) would, for SGD and Adam.
    func testParameterGroupsActAsSeparateOptimisers() {
        func params() -> [Parameter] { [Parameter(Tensor(shape: [2], values: [1, -2])), Parameter(Tensor(shape: [3], values: [0.5, 0.1, -1]))] }
        let grads: [[Float]] = [[0.3, -0.7], [1, 2, -0.5]]
        for adam in [false, true] {
            let grouped = params(), alone = params()
            let lr: Float = 0.1
            func make(_ groups: [ParameterGroup], _ lr: Float, _ wd: Float) -> Optimizer {
                adam ? Adam(groups: groups, lr: lr, weightDecay: wd) : SGD(groups: groups, lr: lr, momentum: 0.9, weightDecay: wd, nesterov: true)
            }
            let g = make([ParameterGroup([("a", grouped[0])]), ParameterGroup([("b", grouped[1])], lrScale: 0.5, weightDecay: 1e-2)], lr, 5e-4)
            let a = make([ParameterGroup([("a", alone[0])])], lr, 5e-4), b = make([ParameterGroup([("b", alone[1])])], lr * 0.5, 1e-2)
            for _ in 0..<3 {
                for (k, list) in [grouped, alone].enumerated() {
                    for (p, gr) in zip(list, grads) { p.value.grad = Tensor(shape: p.value.shape, values: gr) }
                    if k == 0 { g.step() } else { a.step(); b.step() }
                }
            }
            for i in 0..<2 { XCTAssertEqual(grouped[i].value.array, alone[i].value.array, "\(adam ? "Adam" : "SGD") group \(i)") }
            XCTAssertEqual(g.parameters.map(\.0), ["a", "b"])
        }
    }

    /// An optimiser's named state restored into a fresh one continues exactly (the resume path); state that does not
    /// fit is refused with the parameter named.
    func testOptimizerStateRoundTrip() throws {
        for adam in [false, true] {
            func make(_ p: Parameter) -> Optimizer {
                adam ? Adam(parameters: [("w", p)], lr: 0.05) : SGD(parameters: [("w", p)], lr: 0.05, momentum: 0.9)
            }
            let p = Parameter(Tensor(shape: [3], values: [1, 2, 3])), q = Parameter(Tensor(shape: [3], values: [1, 2, 3]))
            let o = make(p), fresh = make(q)
            func grad(_ x: Parameter, _ k: Int) { x.value.grad = Tensor(shape: [3], values: [Float(k) - 0.5, 1, -2]) }
            for k in 0..<2 { grad(p, k); o.step() }
            q.value.data.update(from: p.value.data, count: 3)
            let state = o.state(of: "w")
            XCTAssertEqual(state.map(\.0), adam ? ["exp_avg", "exp_avg_sq", "step"] : ["momentum_buffer"])
            try fresh.setState(of: "w", state.map { ($0.0, $0.1.copy()) })
            grad(p, 2); o.step(); grad(q, 2); fresh.step()
            XCTAssertEqual(p.value.array, q.value.array, adam ? "Adam" : "SGD")
            XCTAssertThrowsError(try fresh.setState(of: "w", [(state[0].0, Tensor(zeros: [4]))]))
            XCTAssertThrowsError(try fresh.setState(of: "nope", state))
        }
    }

    func testLayerGradients() {
        var g = Generator(seed: 4)
        let conv = Conv2d(3, 4, kernelSize: 3, stride: 2, padding: 1, bias: true, generator: &g)
        let x = randomTensor([2, 5, 5, 3], seed: 5)
        gradCheck([x, conv.weight.value, conv.bias!.value], "Conv2d layer") { _ in conv(x) }
        let fc = Linear(6, 3, generator: &g)
        let v = randomTensor([4, 6], seed: 6)
        gradCheck([v, fc.weight.value, fc.bias!.value], eps: 1e-3, "Linear layer") { _ in fc(v) }
    }
}
