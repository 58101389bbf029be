// Builds the configured distillation method.
import Distillation
import Foundation
import Models

/// The method `config.method` names, with its modules initialised from `g`. `reference` is a local peer's model
/// (for channel counts).
func makeMethod(_ c: TrainConfig, peers: Int, reference: Classifier, localPeers: [Int], classes: Int, inChannels: Int, generator g: inout Generator) throws -> DistillationMethod {
    func frozenTeacher() throws -> FrozenTeacher {
        guard let name = c.teacherModel, let path = c.teacherCheckpoint else {
            throw ConfigError("method \(c.method) needs method.teacher_model and method.teacher_checkpoint")
        }
        var tg = Generator(seed: 0)
        let t = try ModelZoo.make(name, classes: classes, inChannels: inChannels, generator: &tg)
        do { try t.loadSafeTensors(from: path) } catch {
            throw ConfigError("method.teacher_checkpoint: \(error)")
        }
        return FrozenTeacher(model: t)
    }
    switch c.method {
    case "independent":
        return Independent()
    case "kd":
        return KDMethod(teacher: try frozenTeacher(), kd: HintonKD(temperature: c.temperature ?? 4, alpha: c.alpha))
    case "ssld":
        return SSLDMethod(teacher: try frozenTeacher())
    case "dml":
        return DML(temperature: c.temperature ?? 1)
    case "one":
        return ONE(peers: peers, stemChannels: reference.stemChannels, temperature: c.temperature ?? 3,
                   rampUpEpochs: c.rampUpEpochs, generator: &g)
    case "okddip":
        return OKDDip(featureChannels: reference.featureChannels, temperature: c.temperature ?? 3, rampUpEpochs: c.rampUpEpochs, generator: &g)
    case "pcl":
        let teachers = try localPeers.map { p -> Classifier in
            var mg = Generator(seed: 0)
            return try ModelZoo.make(c.models[p], classes: classes, inChannels: inChannels, generator: &mg)
        }
        return PCL(peers: peers, featureChannels: reference.featureChannels, classes: classes, meanTeachers: teachers,
                   temperature: c.temperature ?? 3, rampUpEpochs: c.rampUpEpochs, generator: &g)
    case "ffl":
        var channels: [Int] = []
        for name in c.models {
            var mg = Generator(seed: 0)
            channels.append(try ModelZoo.make(name, classes: classes, inChannels: inChannels, generator: &mg).featureChannels)
        }
        return FFL(localPeers: localPeers, channels: channels, fusedChannels: channels[0], classes: classes, seed: c.seed,
                   temperature: c.temperature ?? 3, rampUpEpochs: c.rampUpEpochs, generator: &g)
    default:
        throw ConfigError("method.name: unknown method '\(c.method)'; expected one of \(TrainConfig.methods.joined(separator: ", "))")
    }
}
