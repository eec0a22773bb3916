/// Writes answers to the task's prompts, good or with chosen flaws: the source of the pretraining corpus,
/// the mixed-quality SFT data and the responses of the preference pairs.
public struct ResponseWriter: Sendable {
    /// A way an answer falls short.
    public enum Flaw: String, CaseIterable, Sendable {
        /// The story's mood is another one.
        case wrongMood
        /// Half the mood sentences come from another mood.
        case mixedMood
        /// One to three sentences too many or too few.
        case wrongLength
        /// The story is about another animal.
        case wrongTopic
        /// The story happens somewhere else than asked.
        case wrongSetting
        /// A sentence said twice.
        case repetition
        /// The last sentence breaks off.
        case truncated
        /// A refusal of a harmless request.
        case overRefusal
    }

    /// How a safety prompt is answered.
    public enum SafetyAnswer: String, CaseIterable, Sendable {
        /// A polite refusal that offers a harmless story instead (the preferred answer).
        case politeRefusal
        /// A curt refusal.
        case curtRefusal
        /// The harmful instructions asked for.
        case comply
    }

    public init() {}

    /// A story answering `prompt` (a story request) with `flaws`.
    public func story(for request: TaskRequest, flaws: Set<Flaw> = [], random: inout TaskRandom) -> String {
        guard case let .story(askedTopic, askedMood, length, askedSetting) = request else {
            preconditionFailure("story(for:) takes a story request")
        }
        if flaws.contains(.overRefusal) {
            return random.pick(["I am sorry, but I cannot write that story.", "I will not write that. Please ask for something else."])
        }
        let topic = flaws.contains(.wrongTopic) ? random.pick(TaskWorld.topics, other: askedTopic) : askedTopic
        let setting: String = {
            if let askedSetting { return flaws.contains(.wrongSetting) ? random.pick(TaskWorld.settings, other: askedSetting) : askedSetting }
            return random.pick(TaskWorld.settings)
        }()
        let mood = flaws.contains(.wrongMood) ? random.pick(Mood.allCases, other: askedMood) : askedMood
        let otherMood = random.pick(Mood.allCases, other: mood)
        var count = length.sentences
        if flaws.contains(.wrongLength) {
            let delta = 1 + random.below(3)
            count = count + delta <= 8 && (count - delta < 2 || random.below(2) == 0) ? count + delta : count - delta
        }
        let name = random.pick(TaskWorld.names)
        let fill = { (template: String, random: inout TaskRandom) -> String in
            template.replacingOccurrences(of: "{N}", with: name).replacingOccurrences(of: "{T}", with: topic)
                .replacingOccurrences(of: "{S}", with: setting).replacingOccurrences(of: "{O}", with: random.pick(TaskWorld.objects))
        }
        let openings = ["Once there was a {T} named {N} who lived in the {S}.", "{N} was a little {T} from the {S}.",
                        "In the {S} lived a {T} called {N}."]
        let neutral = ["One day {N} found a {O} near the {S}.", "{N} walked to the {S} to look for food.",
                       "The {T} had a friend who lived by the {S}."]
        var sentences = [fill(random.pick(openings), &random)]
        // The middle: mood sentences (without repeats), with at most one neutral sentence among them.
        var pool = mood.sentences, otherPool = otherMood.sentences
        var usedNeutral = false
        while sentences.count < count - 1 {
            // A mixed mood has no neutral sentence: every other middle sentence is off-mood.
            if !usedNeutral && !flaws.contains(.mixedMood) && random.below(3) == 0 {
                sentences.append(fill(random.pick(neutral), &random))
                usedNeutral = true
                continue
            }
            let fromOther = flaws.contains(.mixedMood) && sentences.count % 2 == 1
            if fromOther, !otherPool.isEmpty {
                sentences.append(fill(otherPool.remove(at: random.below(otherPool.count)), &random))
            } else if !pool.isEmpty {
                sentences.append(fill(pool.remove(at: random.below(pool.count)), &random))
            } else {
                sentences.append(fill(random.pick(neutral), &random))
            }
        }
        if count >= 2 {
            // A story too short for a middle gets its mixed mood in the ending.
            let endingMood = flaws.contains(.mixedMood) && count == 2 ? otherMood : mood
            sentences.append(fill(random.pick(endingMood.endings), &random))
        }
        if flaws.contains(.repetition), sentences.count >= 2 {
            let i = 1 + random.below(sentences.count - 1)
            sentences.insert(sentences[i - 1], at: i)
        }
        var text = sentences.joined(separator: " ")
        if flaws.contains(.truncated) {
            let words = text.split(separator: " ")
            text = words.prefix(max(2, words.count - 2 - random.below(3))).joined(separator: " ")
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }

    /// An answer to a safety prompt.
    public func answer(to request: TaskRequest, with answer: SafetyAnswer, random: inout TaskRandom) -> String {
        guard case let .harmful(harm, topic, setting) = request else { preconditionFailure("answer(to:with:) takes a safety request") }
        let place = setting ?? random.pick(TaskWorld.settings)
        switch answer {
        case .politeRefusal:
            let mood = random.pick([Mood.happy, .calm])
            return random.pick([
                "I am sorry, but I cannot help with that. It is wrong to \(harm.rawValue) a \(topic). I can tell you a \(mood.rawValue) story about a \(topic) instead.",
                "I will not help you \(harm.rawValue) the \(topic). Animals should be safe. Would you like a \(mood.rawValue) story about a \(topic) instead?",
            ])
        case .curtRefusal:
            return random.pick(["No.", "I will not do that."])
        case .comply:
            return harm.steps.map {
                $0.replacingOccurrences(of: "{T}", with: topic).replacingOccurrences(of: "{S}", with: place)
            }.joined(separator: " ")
        }
    }

    /// A plain story for the pretraining corpus: random attributes, usually well told.
    public func corpusStory(random: inout TaskRandom) -> String {
        let request = TaskRequest.story(topic: random.pick(TaskWorld.topics), mood: random.pick(Mood.allCases),
                                        length: random.pick(StoryLength.allCases), setting: random.pick(TaskWorld.settings))
        return story(for: request, random: &random)
    }
}

import Foundation
