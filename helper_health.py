"""Training-health monitor (placeholder until issue 4)."""


class HealthMonitor:
    def __init__(self, real):
        self.real = real

    def update(self, rows):
        return []

    def check_samples(self, samples):
        return []
