// Module: a layer or model that owns parameters and buffers under PyTorch state-dict names.
//
// Enumeration order is written by hand (own tensors first, then children in declaration order, as
// PyTorch's state_dict); the optimiser, checkpoints and gradient synchronisation all depend on it being
// the same on every rank.
import Tensors

/// A named tensor of a module: a trainable weight, or a buffer such as batch norm's running mean.
public final class Parameter {
    /// The values. A trainable parameter's tensor is a leaf that requires gradients; optimisers update it in place.
    public let value: Tensor
    /// False for buffers (running statistics): saved in checkpoints, skipped by optimisers.
    public let isTrainable: Bool

    public init(_ value: Tensor, trainable: Bool = true) {
        self.value = value
        self.isTrainable = trainable
        value.requiresGrad = trainable
    }

    /// The accumulated gradient, if any.
    public var grad: Tensor? { value.grad }
    public var shape: [Int] { value.shape }
}

public protocol Module: AnyObject {
    /// Parameters and buffers this module owns directly, in state-dict order.
    var ownTensors: [(String, Parameter)] { get }
    /// Sub-modules with their attribute names, in state-dict order.
    var children: [(String, Module)] { get }
    /// Training mode (batch statistics, dropout) versus evaluation mode.
    var isTraining: Bool { get set }
}

extension Module {
    public var ownTensors: [(String, Parameter)] { [] }
    public var children: [(String, Module)] { [] }

    /// Every parameter and buffer with its full dotted name, in PyTorch state_dict order.
    public func namedState() -> [(String, Parameter)] {
        var result = ownTensors
        for (name, child) in children {
            for (sub, p) in child.namedState() { result.append((name + "." + sub, p)) }
        }
        return result
    }

    /// Trainable parameters with their full names.
    public func namedParameters() -> [(String, Parameter)] { namedState().filter { $0.1.isTrainable } }

    /// Buffers (non-trainable state) with their full names.
    public func namedBuffers() -> [(String, Parameter)] { namedState().filter { !$0.1.isTrainable } }

    /// Number of trainable scalars.
    public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.1.value.count } }

    /// Switches this module and its children to training mode.
    public func train() { setTraining(true) }
    /// Switches this module and its children to evaluation mode.
    public func eval() { setTraining(false) }

    func setTraining(_ on: Bool) {
        isTraining = on
        for (_, c) in children { c.setTraining(on) }
    }

    /// Drops every accumulated gradient.
    public func zeroGrad() { for (_, p) in namedParameters() { p.value.zeroGrad() } }
}

/// A module with one input and one output.
public protocol Layer: Module {
    func callAsFunction(_ x: Tensor) -> Tensor
}
