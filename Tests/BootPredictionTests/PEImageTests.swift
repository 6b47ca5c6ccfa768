import BootPrediction
import XCTest
