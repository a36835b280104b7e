"""Errors of training courses, lessons, completion and quizzes."""
from __future__ import annotations

from server.errors import ConflictError, NotFoundError, RateLimitedError


class CourseNotFoundError(NotFoundError):
    code, message = 40485, "no such course"


class LessonNotFoundError(NotFoundError):
    code, message = 40486, "no such lesson"


class NoQuizError(NotFoundError):
    code, message = 40487, "this course has no quiz"


class CourseEmptyError(ConflictError):
    code, message = 40985, "a course needs at least one lesson to be published"


class QuizAttemptsExceededError(RateLimitedError):
    code, message = 42980, "too many quiz attempts for this course in the last hour, try again later"
