"""client_api/errors.py: the errors handlers raise by name."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from roost.client_api.errors import MatrixError, fenced_as_unavailable
from roost.storage.stream_positions import WriterFenced


class FencedTests(TestCase):
    def test_a_write_refused_by_the_fence_answers_503_and_other_errors_pass(self) -> None:
        with self.assertRaises(MatrixError) as caught, fenced_as_unavailable():
            raise WriterFenced("b was retired from the receipts stream")
        self.assertEqual((caught.exception.status, caught.exception.errcode),
                         (503, "M_UNKNOWN"))
        self.assertIn("receipts", caught.exception.error)
        with self.assertRaises(ValueError), fenced_as_unavailable():
            raise ValueError("not a fence")
