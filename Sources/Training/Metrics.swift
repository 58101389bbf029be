// Metrics: what a run measures, as Codable values. Every JSON line the project prints or writes (metrics.jsonl,
// `--json` outputs) goes through `jsonLine`, so it is valid JSON whatever the values: names and paths escaped,
// non-finite numbers written as the strings "nan", "inf", "-inf".
import Foundation
import Tensors

/// One line of metrics.jsonl: an epoch's figures.
public struct EpochMetrics: Codable, Equatable {
    /// Wall-clock time the line was written (ISO 8601, UTC).
    public var time = ""
    public var epoch = 0
    public var lr: Float = 0
    /// Mean training loss of each peer (its own terms).
    public var loss: [Float] = []
    /// Mean of each loss term of the cohort's objective over the epoch's steps.
    public var terms: [String: Float] = [:]
    public var trainTop1: [Float] = [], trainTop5: [Float] = []
    /// Test accuracy of each peer (nil when not evaluated this epoch).
    public var testTop1: [Float]?, testTop5: [Float]?
    /// The method's teacher: its name and training / test accuracy.
    public var teacher: String?
    public var teacherTrainTop1: Float?, teacherTestTop1: Float?, teacherTestTop5: Float?
    /// Test top-1 of the method's further predictions (CSS's branches), by name.
    public var extraTestTop1: [String: Float]?
    /// The same top-1 figures on the validation split (`dataset.validation`), nil without one.
    public var valTop1: [Float]?, teacherValTop1: Float?, extraValTop1: [String: Float]?
    public var imagesPerSecond = 0.0
    public var communicationSeconds = 0.0
    /// Wall time of the epoch's training steps (nil in runs written before it was recorded).
    public var seconds: Double?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case time, epoch, lr, loss, terms, teacher
        case trainTop1 = "train_top1", trainTop5 = "train_top5", testTop1 = "test_top1", testTop5 = "test_top5"
        case teacherTrainTop1 = "teacher_train_top1", teacherTestTop1 = "teacher_test_top1", teacherTestTop5 = "teacher_test_top5"
        case imagesPerSecond = "images_per_second", communicationSeconds = "communication_seconds", seconds
        case extraTestTop1 = "extra_test_top1"
        case valTop1 = "val_top1", teacherValTop1 = "teacher_val_top1", extraValTop1 = "extra_val_top1"
    }
}

/// Test accuracy of every peer and of the teacher.
public struct Evaluation: Equatable {
    public var top1: [Float], top5: [Float]
    public var teacherTop1: Float?, teacherTop5: Float?
    /// Top-1 of the method's further predictions, by name (empty when it has none).
    public var extraTop1: [String: Float] = [:]
}

/// The encoder of every JSON line: sorted keys, non-finite numbers as strings.
public func jsonLine<T: Encodable>(_ value: T) throws -> Data {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return try e.encode(value)
}

/// The current time as ISO 8601 (UTC, seconds).
public func timestamp() -> String { ISO8601DateFormatter().string(from: Date()) }

/// How many of the first `labels.count` rows rank their label first, and within the first five (ties count for
/// the label). Rows past the labels (unlabeled images mixed into a batch) are not counted.
func topCounts(_ logits: Tensor, _ labels: [Int]) -> (top1: Double, top5: Double) {
    let c = logits.shape[1]
    var a = 0.0, b = 0.0
    for (r, label) in labels.enumerated() {
        let row = logits.data + r * c
        var higher = 0
        for j in 0..<c where row[j] > row[label] { higher += 1 }
        if higher == 0 { a += 1 }
        if higher < 5 { b += 1 }
    }
    return (a, b)
}
