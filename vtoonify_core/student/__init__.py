"""A real-time student distilled from VToonify (the two-stage video network of "Context-Preserving
Two-Stage Video Domain Translation"): train it on a clip with a teacher, save, load and run it."""
from .files import load_student
from .model import Student, StudentState
from .network import StudentConfig
from .teacher import VToonifyTeacher, vtoonify_teacher
from .training import train_student

__all__ = ["Student", "StudentConfig", "StudentState", "VToonifyTeacher", "load_student", "train_student",
           "vtoonify_teacher"]
