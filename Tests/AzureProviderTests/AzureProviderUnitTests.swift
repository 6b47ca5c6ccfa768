@testable import AzureProvider
import XCTest

final class AzureProviderUnitTests: XCTestCase {
    func testPlaceholder() {}
}
