"""Helpers shared by the tests: a real DVC project in a temp dir, a fake OpenAI
teacher on 127.0.0.1, teacher builders, and scripts the tests run as subprocesses."""
