/// What `cleanup <cloud>` removed (or, with `--dry-run`, would remove): the same shape for
/// every cloud, so the CLI reports them alike.
public struct CleanupOutcome: Sendable {
    /// `kind name` lines in the order they were handled, e.g. `instance i-0abc`.
    public var removed: [String]
    public var alreadyGone: [String]
    /// The region, zone or location the VM was in ("" when unknown).
    public var region: String
    public var plan: [PlannedCall]
    public var artifactPath: String
    public var dryRun: Bool

    public init(removed: [String], alreadyGone: [String], region: String, plan: [PlannedCall], artifactPath: String, dryRun: Bool) {
        self.removed = removed
        self.alreadyGone = alreadyGone
        self.region = region
        self.plan = plan
        self.artifactPath = artifactPath
        self.dryRun = dryRun
    }
}
