# Writes OUT, a header defining HSM_BUILD_ID: "g" and the commit hsmd is built
# from (12 hex digits), ".dirty" when tracked files differ from it; "unknown"
# outside a git checkout.  Run at every build; OUT is rewritten only when the
# identity changed, so an unchanged tree rebuilds nothing.
#   cmake -DSRC=<source dir> -DOUT=<header> -P build_id.cmake
set(id "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SRC}" rev-parse --short=12 HEAD
                  OUTPUT_VARIABLE commit RESULT_VARIABLE rc ERROR_QUIET
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(rc EQUAL 0 AND commit MATCHES "^[0-9a-f]+$")
    set(id "g${commit}")
    execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SRC}" status --porcelain
                            --untracked-files=no
                    OUTPUT_VARIABLE changes RESULT_VARIABLE rc ERROR_QUIET)
    if(NOT rc EQUAL 0 OR NOT changes STREQUAL "")
      set(id "${id}.dirty")
    endif()
  endif()
endif()
set(text "#define HSM_BUILD_ID \"${id}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
else()
  set(old "")
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
