// The one place where the training values meet their generated messages (`Protos/rlhf/v1/work.proto`).

extension TrainKind {
    var wire: Rlhf_V1_TrainKind {
        switch self {
        case .sft: return .sft
        case .rewardRanking: return .rewardRanking
        case .ppo: return .ppo
        case .saveState: return .saveState
        case .announceAll: return .announceAll
        case .markInitial: return .markInitial
        case .policyIteration: return .policyIteration
        case .dpo: return .dpo
        case .snapshot: return .snapshot
        case .restoreSnapshot: return .restoreSnapshot
        }
    }

    init(wire: Rlhf_V1_TrainKind) throws {
        switch wire {
        case .sft: self = .sft
        case .rewardRanking: self = .rewardRanking
        case .ppo: self = .ppo
        case .saveState: self = .saveState
        case .announceAll: self = .announceAll
        case .markInitial: self = .markInitial
        case .policyIteration: self = .policyIteration
        case .dpo: self = .dpo
        case .snapshot: self = .snapshot
        case .restoreSnapshot: self = .restoreSnapshot
        default: throw WireError.malformedBody("unknown train batch kind \(wire)")
        }
    }
}

extension TrainBatch: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var b = Rlhf_V1_TrainBatch()
        b.kind = kind.wire
        b.sequences = sequences.map(\.wire)
        b.learningRate = learningRate
        b.policyVersion = policyVersion
        b.model = model.wire
        b.fromInitial = fromInitial
        b.miniBatchSize = UInt32(clamping: miniBatchSize)
        b.valueLearningRate = valueLearningRate
        b.gamma = gamma
        b.gaeLambda = gaeLambda
        b.shuffleSeed = shuffleSeed
        b.stateStep = UInt32(clamping: stateStep)
        b.ppoEpochs = UInt32(clamping: ppoEpochs)
        b.klBeta = klBeta
        switch aggregation {
        case .token: b.lossAggregation = .token
        case .sequence: b.lossAggregation = .sequence
        case .constant(let length):
            b.lossAggregation = .constant
            b.aggregationLength = UInt32(clamping: length)
        }
        b.clip = clip
        b.preferenceObjective = objective == .ipo ? .ipo : .sigmoid
        b.labelSmoothing = labelSmoothing
        b.snapshotName = snapshotName
        return WirePayload(body: try protoBytes(b), tensors: tensors)
    }

    public init(wirePayload: WirePayload) throws {
        let b = try Rlhf_V1_TrainBatch.parse(wirePayload.body)
        self.init(kind: try TrainKind(wire: b.kind))
        sequences = b.sequences.map(TokenSequence.init(wire:))
        learningRate = b.learningRate
        policyVersion = b.policyVersion
        model = try ModelKind(wire: b.model)
        fromInitial = b.fromInitial
        miniBatchSize = Int(b.miniBatchSize)
        valueLearningRate = b.valueLearningRate
        gamma = b.gamma
        gaeLambda = b.gaeLambda
        shuffleSeed = b.shuffleSeed
        stateStep = Int(b.stateStep)
        ppoEpochs = Int(b.ppoEpochs)
        klBeta = b.klBeta
        switch b.lossAggregation {
        case .token: aggregation = .token
        case .sequence: aggregation = .sequence
        case .constant: aggregation = .constant(Int(b.aggregationLength))
        case .UNRECOGNIZED(let n): throw WireError.malformedBody("unknown loss aggregation \(n)")
        }
        clip = b.clip
        switch b.preferenceObjective {
        case .sigmoid: objective = .sigmoid
        case .ipo: objective = .ipo
        case .UNRECOGNIZED(let n): throw WireError.malformedBody("unknown preference objective \(n)")
        }
        labelSmoothing = b.labelSmoothing
        snapshotName = b.snapshotName
        tensors = wirePayload.tensors
    }
}

extension TrainStats: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var s = Rlhf_V1_TrainStats()
        s.kind = kind.wire
        s.loss = loss
        s.gradNorm = gradNorm
        s.learningRate = learningRate
        s.clipFraction = clipFraction
        s.approxKl = approxKL
        s.tokens = tokens
        s.step = step
        s.policyVersion = policyVersion
        if let announce { s.announce = announce.wire }
        s.accuracy = accuracy
        s.valueLoss = valueLoss
        s.valueClipFraction = valueClipFraction
        s.gradientSteps = UInt32(clamping: gradientSteps)
        s.meanReturn = meanReturn
        s.announces = announces.map(\.wire)
        s.referenceKl = referenceKL
        s.rewardMargin = rewardMargin
        return WirePayload(body: try protoBytes(s))
    }

    public init(wirePayload: WirePayload) throws {
        let s = try Rlhf_V1_TrainStats.parse(wirePayload.body)
        self.init(kind: try TrainKind(wire: s.kind))
        loss = s.loss
        gradNorm = s.gradNorm
        learningRate = s.learningRate
        clipFraction = s.clipFraction
        approxKL = s.approxKl
        tokens = s.tokens
        step = s.step
        policyVersion = s.policyVersion
        announce = s.hasAnnounce ? try WeightAnnouncement(wire: s.announce) : nil
        accuracy = s.accuracy
        valueLoss = s.valueLoss
        valueClipFraction = s.valueClipFraction
        gradientSteps = Int(s.gradientSteps)
        meanReturn = s.meanReturn
        announces = try s.announces.map(WeightAnnouncement.init(wire:))
        referenceKL = s.referenceKl
        rewardMargin = s.rewardMargin
    }
}

extension WeightAnnouncement: WireCodable {
    /// The generated form (WEIGHT_ANNOUNCE), for the weight-sync protocol in ClusterRuntime.
    public var wire: Rlhf_V1_WeightAnnounce {
        var a = Rlhf_V1_WeightAnnounce()
        a.policyVersion = policyVersion
        a.totalBytes = totalBytes
        a.chunkBytes = UInt32(clamping: chunkBytes)
        a.tensors = tensors.map { t in
            var w = Rlhf_V1_WeightTensor()
            w.name = t.name
            w.shape = t.shape.map(Int64.init)
            w.byteLength = t.byteLength
            w.crc32C = t.crc32c
            return w
        }
        a.source = source
        a.model = model.wire
        a.headWeight = headWeight
        a.headBias = headBias
        if let lora {
            var l = Rlhf_V1_LoraAdapters()
            l.rank = UInt32(clamping: lora.rank)
            l.alpha = lora.alpha
            l.targets = lora.targets
            l.baseWeights = lora.base.wire
            a.lora = l
        }
        return a
    }

    /// Reads the generated form back, refusing an unknown model kind or a negative shape.
    public init(wire a: Rlhf_V1_WeightAnnounce) throws {
        self.init(policyVersion: a.policyVersion, totalBytes: a.totalBytes, chunkBytes: Int(a.chunkBytes),
                  tensors: try a.tensors.map { t in
                      guard t.shape.allSatisfy({ $0 >= 0 }) else {
                          throw WireError.malformedBody("weight tensor \(t.name) has a negative dimension in \(t.shape)")
                      }
                      return Tensor(name: t.name, shape: t.shape.map { Int($0) }, byteLength: t.byteLength, crc32c: t.crc32C)
                  },
                  source: a.source, model: try ModelKind(wire: a.model))
        headWeight = a.headWeight
        headBias = a.headBias
        if a.hasLora {
            guard a.lora.hasBaseWeights, !a.lora.baseWeights.hasLora else {
                throw WireError.malformedBody("LoRA adapters must name a base of whole weights")
            }
            lora = Adapters(rank: Int(a.lora.rank), alpha: a.lora.alpha, targets: a.lora.targets, base: try WeightAnnouncement(wire: a.lora.baseWeights))
        }
    }

    public func wirePayload() throws -> WirePayload { WirePayload(body: try protoBytes(wire)) }

    public init(wirePayload: WirePayload) throws { try self.init(wire: try Rlhf_V1_WeightAnnounce.parse(wirePayload.body)) }
}
