// Every method's one optimisation step against a PyTorch twin of its official code (tools/golden/twins/methods.py;
// each case names the file it follows): from the golden weights on a fixed batch of 8 CIFAR-100-format images at full
// distillation weight with the method's official optimiser, every loss term the method reports and every
// parameter and buffer after the step, within 20× the twin's own float32-against-float64 distance (and 1e-5 of
// the largest value for terms; Adam cases a stated 1e-3·lr more, the generator says why). The run is the trainer's (one process, the config the golden file carries), so the
// data path, the optimiser groups and the schedule are what a user runs.
import Collectives
import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors
import TestSupport
import Training
import XCTest

final class GoldenMethodTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "distill-golden-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
    }

    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    /// CIFAR-100 binary records (coarse label 0, fine label, then the R, G and B planes) of images [N, H, W, 3].
    func writeCIFAR100(_ images: Tensor, labels: [Int], to path: String) throws {
        let (n, h, w) = (images.shape[0], images.shape[1], images.shape[2])
        var bytes: [UInt8] = []
        for i in 0..<n {
            bytes += [0, UInt8(labels[i])]
            for c in 0..<3 { for p in 0..<(h * w) { bytes.append(UInt8(images.data[(i * h * w + p) * 3 + c])) } }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    /// The tensors of the run under their golden names: peer p's network "peerP.<name>" (a shared stem: peer 0's),
    /// its module "peerP.module.<name>", its untrained state "peerP.extra.<name>" (PCL's mean teacher; its copy of
    /// a shared stem under peer 0's name), the method's modules "method.<name>".
    func goldenState(_ x: Experiment) -> [(String, Parameter)] {
        var out: [(String, Parameter)] = []
        let stem = { (name: String) in x.cohort.stem?.owns(name) ?? false }
        for (k, p) in (0..<x.models.count).enumerated() {
            let m = x.models[k]
            out += m.namedState().filter { p == 0 || !stem($0.0) }.map { ("peer\(p)." + $0.0, $0.1) }
            if let mod = x.method.peerModule(k) { out += mod.namedState().map { ("peer\(p).module." + $0.0, $0.1) } }
            if let extra = x.method.peerExtraState(k) {
                out += extra.namedState().map { ("peer\(stem($0.0) ? 0 : p).extra." + $0.0, $0.1) }
            }
        }
        out += ModuleGroup(x.method.modules).namedState().map { ("method." + $0.0, $0.1) }
        return out
    }

    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let g = try GoldenFile("method-" + name)
        let labels = try g.tensor("labels").array.map { Int($0) }
        // The batch's bytes: ⌊256·u⌋ of the weight rule's uniforms for "images", [N, 32, 32, 3] (as the generator).
        let images = Tensor(shape: [labels.count, 32, 32, 3],
                            values: GoldenWeights.uniforms("images", labels.count * 32 * 32 * 3).map { Float(($0 * 256).rounded(.down)) })
        for split in ["train", "test"] { try writeCIFAR100(images, labels: labels, to: dir + "/data/\(split).bin") }
        var yaml = try XCTUnwrap(g.metadata["config"], "\(name): no config")
        if let teacher = g.metadata["teacher"] {
            var gen = Generator(seed: 0)
            let t = try ModelZoo.make(teacher, classes: 100, inChannels: 3, generator: &gen)
            GoldenWeights.fill(t.namedState(), prefix: "teacher.")
            try t.saveSafeTensors(to: dir + "/teacher.safetensors")
            yaml = yaml.replacingOccurrences(of: "{TEACHER}", with: dir + "/teacher.safetensors")
        }
        yaml = yaml.replacingOccurrences(of: "{DATA}", with: dir + "/data").replacingOccurrences(of: "{OUT}", with: dir + "/run")
        let config = try TrainConfig.parse(yaml, source: "golden \(name)")
        let trainer = try Trainer(config: config, comm: try MPICommunicator.world())
        trainer.report = { _ in }
        let state = goldenState(trainer.experiment)
        for (gname, p) in state { GoldenWeights.fill([(gname, p)]) }
        let metrics = try trainer.run()
        XCTAssertEqual(metrics.count, 1, file: file, line: line)
        let terms = g.tensors.keys.filter { $0.hasPrefix("term.") }.sorted()
        XCTAssertFalse(terms.isEmpty, "\(name): the golden file has terms", file: file, line: line)
        XCTAssertEqual(Set(terms.map { String($0.dropFirst(5)) }), Set(metrics[0].terms.keys), "\(name): the terms reported", file: file, line: line)
        for key in terms {
            let got = metrics[0].terms[String(key.dropFirst(5))] ?? .nan
            try g.assertMatches(Tensor(shape: [1], values: [got]), key, floor: 1e-5, file: file, line: line)
        }
        // Tensors that share a golden name (mean teachers' copies of a shared stem) are each compared with it.
        var byName: [String: [Parameter]] = [:]
        for (gname, p) in state { byName[gname, default: []].append(p) }
        let after = g.tensors.keys.filter { $0.hasPrefix("after.") }.sorted()
        XCTAssertEqual(Set(after.map { String($0.dropFirst(6)) }), Set(byName.keys), "\(name): every tensor is compared", file: file, line: line)
        let absolute = try g.number("after_floor")
        for key in after {
            for p in byName[String(key.dropFirst(6))] ?? [] { try g.assertMatches(p.value, key, absolute: absolute, file: file, line: line) }
        }
    }

    func testIndependent() throws { try check("independent") }
    func testKD() throws { try check("kd") }
    func testDKD() throws { try check("dkd") }
    func testDML() throws { try check("dml") }
    func testOEC() throws { try check("oec") }
    func testSSLD() throws { try check("ssld") }
    func testFitNets() throws { try check("fitnets") }
    func testAT() throws { try check("at") }
    func testONE() throws { try check("one") }
    func testOKDDip() throws { try check("okddip") }
    func testCSS() throws { try check("css") }
    func testPCL() throws { try check("pcl") }
    func testOKDHP() throws { try check("okdhp") }
    func testFFL() throws { try check("ffl") }
    func testAvatar() throws { try check("avatar") }
    func testCRD() throws { try check("crd") }
    func testMCL() throws { try check("mcl") }
    func testMSDCRD() throws { try check("msdcrd") }
    func testAFD() throws { try check("afd") }
}
