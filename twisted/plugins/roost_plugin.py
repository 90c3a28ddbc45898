from twisted.application.service import ServiceMaker

roost = ServiceMaker("Roost", "roost.homeserver.tap", "A Matrix homeserver.", "roost")
